"""Knowledge sharing, distillation and VAE pictures on the tiny preset; MNIST-format loaders on
files the tests write; hand-worked loss values; bad input."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from worldmodels.config import get_config
from worldmodels.errors import DataError
from worldmodels.experiments.data import (
    IDX_NAMES,
    class_split,
    load_dataset,
    load_digits,
    read_idx,
    write_idx,
)
from worldmodels.losses_generative import (
    binary_cross_entropy_per_image,
    distillation_loss,
    gradient_penalty,
    perceptual_per_image,
)


def fake_mnist(n_train=120, n_test=40, size=8, seed=0):
    """Digit-like uint8 images: class c is a bright bar at row c (learnable, 10 classes)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, (c * size) // 10, :] = 255
        return x, y.astype(np.uint8)

    return make(n_train), make(n_test)


def write_idx_folder(folder, compress: bool, **kw):
    folder.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = fake_mnist(**kw)
    suffix = ".gz" if compress else ""
    for key, array in (("x_train", xtr), ("y_train", ytr), ("x_test", xte), ("y_test", yte)):
        write_idx(folder / f"{IDX_NAMES[key]}{suffix}", array)
    return (xtr, ytr), (xte, yte)


# ----------------------------------------------------------------------------------------------
# loaders


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads(tmp_path, compress):
    (xtr, ytr), (xte, yte) = write_idx_folder(tmp_path / "mnist", compress)
    data = load_dataset(str(tmp_path / "mnist"))
    assert data.x_train.shape == (120, 8, 8, 1) and data.x_test.shape == (40, 8, 8, 1)
    np.testing.assert_allclose(data.x_train[..., 0], xtr / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, yte)
    assert data.num_classes == 10
    # one of the files names the folder too
    suffix = ".gz" if compress else ""
    again = load_dataset(str(tmp_path / "mnist" / f"t10k-labels-idx1-ubyte{suffix}"))
    np.testing.assert_array_equal(again.y_train, ytr)


def test_keras_npz_loads(tmp_path):
    (xtr, ytr), (xte, yte) = fake_mnist()
    np.savez_compressed(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    data = load_dataset(str(tmp_path / "mnist.npz"))
    np.testing.assert_allclose(data.x_test[..., 0], xte / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, ytr)


def test_idx_header_is_read_not_guessed(tmp_path):
    # hand-written IDX bytes: magic 0x00000803, dims 2 x 2 x 3, big-endian
    body = bytes(range(12))
    (tmp_path / "a").write_bytes(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big")
                                 + (3).to_bytes(4, "big") + body)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    (tmp_path / "b.gz").write_bytes(gzip.compress((tmp_path / "a").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), read_idx(tmp_path / "a"))


def test_bad_data_files(tmp_path):
    with pytest.raises(DataError, match=r"no such file or folder; valid: '' \(scikit-learn digits\)"):
        load_dataset(str(tmp_path / "nothing"))
    write_idx_folder(tmp_path / "m", compress=False)
    path = tmp_path / "m" / IDX_NAMES["x_test"]
    path.write_bytes(path.read_bytes()[:-5])  # truncated
    with pytest.raises(DataError, match="IDX header says"):
        load_dataset(str(tmp_path / "m"))
    path.write_bytes(b"\x12\x34garbage")
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset(str(tmp_path / "m"))
    path.unlink()
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        load_dataset(str(tmp_path / "m"))
    (xtr, ytr), _ = fake_mnist()
    np.savez(tmp_path / "bad.npz", x_train=xtr, y_train=ytr)
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "short.npz", x_train=xtr, y_train=ytr[:5], x_test=xtr, y_test=ytr)
    with pytest.raises(DataError, match="labels must be"):
        load_dataset(str(tmp_path / "short.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable npz"):
        load_dataset(str(tmp_path / "junk.npz"))


def test_digits_and_class_splits():
    data = load_digits(16)
    assert data.x_train.shape[1:] == (16, 16, 1) and len(data.x_train) + len(data.x_test) == 1797
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert set(np.unique(data.y_test)) == set(range(10))
    first, second = class_split(np.arange(10), seed=3)
    assert len(first) == len(second) == 5 and not set(first) & set(second)
    assert not np.array_equal(first, class_split(np.arange(10), seed=4)[0])
    first, second = class_split(np.arange(10), 0, (7, 1))
    assert first.tolist() == [1, 7] and len(second) == 8
    with pytest.raises(DataError, match="leaves a side empty"):
        class_split(np.arange(10), 0, tuple(range(10)))
    with pytest.raises(DataError, match=r"classes \[12\] the data lacks"):
        class_split(np.arange(10), 0, (1, 12))


# ----------------------------------------------------------------------------------------------
# hand-worked losses


def test_distillation_loss_hand_worked():
    logits = jnp.array([[np.log(3.0), 0.0]])  # softmax = (3/4, 1/4)
    hard = jnp.array([[1.0, 0.0]])
    teacher = jnp.array([[0.5, 0.5]])
    expected = -np.log(0.75) - 2.0 * (0.5 * np.log(0.75) + 0.5 * np.log(0.25))
    np.testing.assert_allclose(distillation_loss(logits, hard, teacher, 1.0, 2.0), [expected], rtol=1e-6)
    # T = 2 halves the logits: softmax = (sqrt 3, 1) / (sqrt 3 + 1)
    p = np.sqrt(3.0) / (np.sqrt(3.0) + 1.0)
    np.testing.assert_allclose(distillation_loss(logits, hard, 0 * teacher, 2.0, 1.0), [-np.log(p)], rtol=1e-6)


def test_gradient_penalty_perceptual_bce_hand_worked():
    w = jnp.full((1, 2, 2, 1), 0.5)  # linear critic: gradient w everywhere, norm 1 -> penalty 0
    critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
    real, fake = jnp.ones((3, 2, 2, 1)), jnp.zeros((3, 2, 2, 1))
    np.testing.assert_allclose(gradient_penalty(critic, real, fake, jax.random.key(0)), 0.0, atol=1e-6)
    critic3 = lambda x: 3.0 * critic(x)  # norm 3 -> (3 - 1)^2
    np.testing.assert_allclose(gradient_penalty(critic3, real, fake, jax.random.key(0)), 4.0, rtol=1e-5)
    a = [jnp.ones((2, 2, 2, 1)), jnp.zeros((2, 3))]
    b = [jnp.zeros((2, 2, 2, 1)), jnp.full((2, 3), 2.0)]
    np.testing.assert_allclose(perceptual_per_image(a, b), [4.0 + 12.0] * 2)
    recon, target = jnp.full((1, 1, 2, 1), 0.5), jnp.array([[[[1.0], [0.0]]]])
    np.testing.assert_allclose(binary_cross_entropy_per_image(recon, target), [2 * np.log(2.0)], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# the experiments through their CLI, tiny preset


def test_knowledge_sharing_tiny_on_idx_files(tmp_path, capsys):
    """The CLI entry in-process (one compile cache for the session); the data from IDX files."""
    write_idx_folder(tmp_path / "mnist", compress=True, n_train=200, n_test=60)
    run = tmp_path / "run"
    from pipeline import knowledge_sharing

    knowledge_sharing.main(["--config", "tiny", "--run", str(run), "--data", str(tmp_path / "mnist")])
    out = run / "knowledge_sharing"
    for name in ("table.md", "accuracy.png", "samples.png", "results.json", "config.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    summary, per_seed = results["summary"], results["per_seed"]
    assert summary["seeds"] == 2 and len(per_seed) == 2 and summary["train_images"] == 200
    assert len(summary["rows"]) == 7
    for row in summary["rows"].values():
        assert 0.0 <= row["mean"] <= 1.0 and row["n"] == 2
    assert per_seed[0]["split"] != per_seed[1]["split"]  # a random class split per seed
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 8 and "separate + best-sample selection + perceptual" in table
    assert "upper bound" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["sharing"]["data"] == str(tmp_path / "mnist")
    # Seeds are saved as they finish: a rerun (or a parallel run given other seeds) reuses them.
    knowledge_sharing.main(["--config", "tiny", "--run", str(run), "--data", str(tmp_path / "mnist")])
    assert capsys.readouterr().out.count("already done") == 2
    assert json.loads((out / "results.json").read_text())["per_seed"] == per_seed


def test_distillation_tiny(tmp_path):
    run = tmp_path / "run"
    from pipeline import distillation

    distillation.main(["--config", "tiny", "--run", str(run), "--distill.student_epochs", "3"])
    out = run / "distillation"
    for name in ("table.md", "curves.png", "mapping.png", "latent.png", "results.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]["rows"]) == {"identity", "noise", "dilated", "two-decoder"}
    curves = results["curves"]
    assert len(curves["without_teacher"][0]) == 3
    for info in curves["experiments"].values():
        assert [r["epoch"] for r in info["with_teacher"][0]] == [1, 2, 3]
        assert all(np.isfinite(r["cross_entropy"]) for r in info["with_teacher"][0])
    assert results["summary"]["data"] == "digits8" and results["summary"]["small"] == 40


def test_vae_pictures_tiny(tmp_path):
    from worldmodels.experiments.data import Dataset
    from worldmodels.experiments.pictures import make_vae_pictures

    (xtr, ytr), (xte, yte) = fake_mnist(n_train=64, n_test=30)
    data = Dataset("fake", (xtr / 255.0)[..., None].astype(np.float32), ytr.astype(np.int32),
                   (xte / 255.0)[..., None].astype(np.float32), yte.astype(np.int32))
    cfg = get_config("tiny", ["--sharing.vae_epochs", "1"]).sharing
    summary = make_vae_pictures(cfg, tmp_path, data)
    for name in ("latent_2d.png", "reconstructions.png", "arithmetic.png", "morphing.png", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert len(summary["latent_2d"]["mu_mean"]) == 2 and np.isfinite(summary["heldout_bce_per_image"])


def run_cli(monkeypatch, capsys, module, *argv: str) -> tuple[int, str]:
    """A stage entry as `make` runs it (main_wrapper: one-line error, exit status), in-process."""
    import importlib
    import sys

    from pipeline._cli import main_wrapper

    entry = importlib.import_module(f"pipeline.{module}")
    monkeypatch.setattr(sys, "argv", [module, *argv])
    with pytest.raises(SystemExit) as exit_info:
        main_wrapper(entry.main, module)()
    return exit_info.value.code, capsys.readouterr().err


def test_experiment_bad_input(tmp_path, monkeypatch, capsys):
    code, err = run_cli(monkeypatch, capsys, "knowledge_sharing", "--config", "tiny", "--run", str(tmp_path),
                        "--data", str(tmp_path / "missing"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: --data") and "no such file or folder; valid: " in lines[0]
    code, err = run_cli(monkeypatch, capsys, "distillation", "--config", "tiny", "--run", str(tmp_path),
                        "--distill.experiments", "identity,rotate")
    assert code == 2 and "valid: identity, noise, dilated, two-decoder" in err
    code, err = run_cli(monkeypatch, capsys, "knowledge_sharing", "--config", "tiny", "--run", str(tmp_path),
                        "--sharing.split", "0,1,2,3,4,5,6,7,8,9")
    assert code == 2 and "leaves a side empty" in err
    code, err = run_cli(monkeypatch, capsys, "vae_pictures", "--config", "tiny", "--run", str(tmp_path),
                        "--data", str(tmp_path))
    assert code == 2 and "no train-images-idx3-ubyte[.gz] in this folder" in err
