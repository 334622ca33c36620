"""Episode files: one compressed .npz per episode.

Keys (T = steps in the episode, A = action size, S = frame size):
  obs        uint8   (T, S, S, 3)  frame seen before the action of step t
  action     float32 (T, A)        action taken at step t
  reward     float32 (T,)          reward received for step t
  terminated bool    (T,)          the env ended the episode at step t
  truncated  bool    (T,)          the time limit (env's or the rollout cap) ended it
  env_id     str     ()            gymnasium id the episode was collected on
  seed       int64   ()            the env seed of the episode
  policy     str     ()            the policy that acted
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from worldmodels.data.atomic import TMP_MARKER, atomic_save_npz, npz_bytes
from worldmodels.errors import DataError

EPISODE_KEYS = ("obs", "action", "reward", "terminated", "truncated", "env_id", "seed", "policy")
_NAME = re.compile(r"^episode_(\d{6,})\.npz$")


def episode_name(index: int) -> str:
    return f"episode_{index:06d}.npz"


def episode_index(path: str | os.PathLike) -> int | None:
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_episodes(folder: str | os.PathLike) -> list[Path]:
    """Finished episode files in `folder`, sorted by index (temporaries are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if TMP_MARKER not in p.name and episode_index(p) is not None]
    return sorted(found, key=episode_index)


def holdout_split(paths: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """(train, held-out): the last `fraction` of the files by index, at least one when the
    fraction is positive and there are two or more, never all of them."""
    held = int(round(len(paths) * fraction))
    if fraction > 0 and len(paths) >= 2:
        held = max(1, held)
    held = min(held, len(paths) - 1)
    return paths[: len(paths) - held], paths[len(paths) - held:]


def episode_arrays(obs, action, reward, terminated, truncated, env_id: str, seed: int,
                   policy: str) -> dict[str, np.ndarray]:
    """The arrays of one episode, with the dtypes of the format."""
    return dict(
        obs=np.asarray(obs, dtype=np.uint8),
        action=np.asarray(action, dtype=np.float32),
        reward=np.asarray(reward, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        env_id=np.asarray(env_id),
        seed=np.asarray(seed, dtype=np.int64),
        policy=np.asarray(policy),
    )


def episode_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    validate_episode(arrays, "<in memory>")
    return npz_bytes(compress=True, **arrays)


def save_episode(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    validate_episode(arrays, str(path))
    atomic_save_npz(path, compress=True, **arrays)


def load_episode(path: str | os.PathLike, keys: tuple[str, ...] = EPISODE_KEYS) -> dict[str, np.ndarray]:
    """Read and validate an episode; a corrupt file raises `DataError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in EPISODE_KEYS if k not in data.files]
            if missing:
                raise DataError(f"episode file {path} lacks {missing}; delete it and rerun `make rollouts`")
            arrays = {k: data[k] for k in keys}
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"episode file {path} does not exist") from None
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, OSError...
        raise DataError(
            f"episode file {path} is corrupt ({type(exc).__name__}: {exc}); "
            "delete it and rerun `make rollouts`"
        ) from None
    if keys == EPISODE_KEYS:
        validate_episode(arrays, str(path))
    return arrays


def validate_episode(arrays: dict[str, np.ndarray], where: str) -> int:
    """Check keys, dtypes and shapes; returns T. Raises `DataError` naming `where`."""

    def fail(why: str) -> DataError:
        return DataError(f"episode {where}: {why}; delete it and rerun `make rollouts`")

    obs = arrays["obs"]
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[-1] != 3 or obs.shape[1] != obs.shape[2]:
        raise fail(f"obs must be uint8 (T, S, S, 3), got {obs.dtype} {obs.shape}")
    steps = obs.shape[0]
    if steps == 0:
        raise fail("the episode has no steps")
    action = arrays["action"]
    if action.dtype != np.float32 or action.ndim != 2 or action.shape[0] != steps:
        raise fail(f"action must be float32 ({steps}, A), got {action.dtype} {action.shape}")
    for key, dtype in (("reward", np.float32), ("terminated", bool), ("truncated", bool)):
        if arrays[key].dtype != dtype or arrays[key].shape != (steps,):
            got = f"{arrays[key].dtype} {arrays[key].shape}"
            raise fail(f"{key} must be {np.dtype(dtype)} ({steps},), got {got}")
    if not (np.isfinite(action).all() and np.isfinite(arrays["reward"]).all()):
        raise fail("action or reward holds NaN or inf")
    return steps


def check_episode_file(path: str | os.PathLike) -> None:
    """Cheap integrity check without decompressing frames: the archive is whole and every
    array header is readable. Used on reruns to refuse a corrupt or truncated episode."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n.removesuffix(".npy") for n in archive.namelist()}
            missing = [k for k in EPISODE_KEYS if k not in names]
            if missing:
                raise DataError(f"episode file {path} lacks {missing}; delete it and rerun")
            for key in ("obs", "action", "reward"):
                with archive.open(f"{key}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        np.lib.format.read_array_header_1_0(member)
                    else:
                        np.lib.format.read_array_header_2_0(member)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"episode file {path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "delete it and rerun to collect it again"
        ) from None
