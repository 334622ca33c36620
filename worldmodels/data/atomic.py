"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A killed process leaves at worst a ``*.tmp-*`` file, which no reader ever opens, and
never a half-written file under the final name.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

TMP_MARKER = ".tmp-"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent, old, or complete."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def npz_bytes(compress: bool = True, **arrays: np.ndarray) -> bytes:
    """The bytes of an .npz archive holding `arrays`."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def atomic_save_npz(path: str | os.PathLike, compress: bool = True, **arrays: np.ndarray) -> None:
    atomic_write_bytes(path, npz_bytes(compress=compress, **arrays))


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporaries left by killed writers; returns how many were removed."""
    removed = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if TMP_MARKER in p.name:
                p.unlink(missing_ok=True)
                removed += 1
    return removed
