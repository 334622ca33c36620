"""Image classification data for the experiments: offline digits, MNIST-format files, splits.

- Default (`path == ""`): scikit-learn's bundled handwritten digits (1,797 images, 8x8, 10
  classes, intensities 0..16; no download), scaled to [0, 1] and resized to `image_size`
  (bilinear; 16 by default), split 70 / 30 into train / test, stratified by class, with a
  fixed seed (the same test set for every experiment seed, as MNIST's fixed test set).
- `path` = a folder holding the standard IDX files of MNIST or FashionMNIST
  (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
  `t10k-labels-idx1-ubyte`, each optionally `.gz`), or one of those files (its folder is
  used), or a Keras `mnist.npz` (`x_train`, `y_train`, `x_test`, `y_test`). Kept at its own
  size (28x28). Nothing is ever downloaded.

Images are float32 (N, H, W, 1) in [0, 1]; labels int32 (N,).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodels.errors import DataError

IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
VALID = ("'' (scikit-learn digits)", "a folder with the MNIST/FashionMNIST IDX files (optionally .gz)",
         "one of those IDX files", "a Keras mnist.npz")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _bad(path, why: str) -> DataError:
    return DataError(f"--data {path}: {why}; valid: {'; '.join(VALID)}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array, checked against its header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise _bad(path, f"cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise _bad(path, "not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]).newbyteorder(">"), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise _bad(path, "truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    count = int(np.prod(shape)) if ndim else 1
    body = raw[4 + 4 * ndim:]
    if len(body) != count * dtype.itemsize:
        raise _bad(path, f"IDX header says {shape} ({count * dtype.itemsize} bytes), the file holds {len(body)}")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write `array` (uint8 or another IDX type) as an IDX file; gzip if the name ends in .gz."""
    array = np.asarray(array)
    codes = {np.dtype(v): k for k, v in IDX_DTYPES.items()}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress if compress is not None else str(path).endswith(".gz"):
        data = gzip.compress(data)
    Path(path).write_bytes(data)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx"),
                      folder / f"{stem.replace('-idx', '.idx')}.gz"):
        if candidate.exists():
            return candidate
    raise _bad(folder, f"no {stem}[.gz] in this folder")


def _as_images(x: np.ndarray, path) -> np.ndarray:
    if x.ndim != 3 or x.shape[1] < 4 or x.shape[2] < 4:
        raise _bad(path, f"images must be (N, H, W) with H, W >= 4, got {x.shape}")
    x = x.astype(np.float32)
    return (x / 255.0 if x.max() > 1.0 else x)[..., None]


def _as_labels(y: np.ndarray, n: int, path) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise _bad(path, f"labels must be (N,) matching {n} images, got {y.shape}")
    if y.min() < 0:
        raise _bad(path, "labels must be >= 0")
    return y.astype(np.int32)


def load_mnist_files(path: str | os.PathLike) -> Dataset:
    """MNIST / FashionMNIST from IDX files (a folder or one of its files) or a Keras mnist.npz."""
    path = Path(path)
    if not path.exists():
        raise _bad(path, "no such file or folder")
    if path.is_file() and path.suffix == ".npz":
        keys = ("x_train", "y_train", "x_test", "y_test")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in keys if k not in data.files]
                if missing:
                    raise _bad(path, f"the npz lacks {', '.join(missing)} (it has {', '.join(data.files)})")
                arrays = {k: data[k] for k in keys}
        except (OSError, ValueError, EOFError) as exc:
            raise _bad(path, f"not a readable npz ({exc})") from None
    else:
        folder = path if path.is_dir() else path.parent
        arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in IDX_NAMES.items()}
    x_train, x_test = _as_images(arrays["x_train"], path), _as_images(arrays["x_test"], path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise _bad(path, f"train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ")
    y_train = _as_labels(arrays["y_train"], len(x_train), path)
    y_test = _as_labels(arrays["y_test"], len(x_test), path)
    return Dataset(path.name, x_train, y_train, x_test, y_test)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 1) -> (N, size, size, 1), bilinear (the identity when the size matches)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    import jax

    return np.asarray(jax.image.resize(x, (len(x), size, size, x.shape[3]), "bilinear")).clip(0, 1)


def load_digits(image_size: int = 16) -> Dataset:
    """scikit-learn's 8x8 digits, resized to `image_size`, split 70/30 stratified (fixed seed)."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: round(len(idx) * TEST_FRACTION)]] = True
    x = resize_images(x, image_size)
    return Dataset(f"digits{image_size}", x[~test], y[~test], x[test], y[test])


def load_dataset(path: str, image_size: int = 16) -> Dataset:
    """The experiments' data: '' = scikit-learn digits, else MNIST-format files (see module doc)."""
    if image_size < 4:
        raise DataError(f"image_size must be >= 4, got {image_size}")
    return load_digits(image_size) if not path else load_mnist_files(path)


def class_split(classes: np.ndarray, seed: int, explicit: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the classes: `explicit` (the first half) or a random half."""
    classes = np.unique(classes)
    if explicit:
        unknown = sorted(set(explicit) - set(classes.tolist()))
        if unknown:
            raise DataError(f"class split names classes {unknown} the data lacks; valid classes: "
                            f"{', '.join(map(str, classes))}")
        first = np.array(sorted(set(explicit)))
    else:
        first = np.sort(np.random.default_rng(seed).permutation(classes)[: len(classes) // 2])
    second = np.setdiff1d(classes, first)
    if len(first) == 0 or len(second) == 0:
        raise DataError(f"the class split leaves a side empty ({first.tolist()} | {second.tolist()}); "
                        f"give some but not all of the classes {', '.join(map(str, classes))}")
    return first, second
