"""Series: every episode encoded by V, the training data of M.

RUN/series/episode_XXXXXX.npz (T = steps, Z = latent size, A = action size):
  mu, logvar  float32 (T, Z)  V's posterior for the frame seen before action t
  action      float32 (T, A)
  reward      float32 (T,)
  done        bool    (T,)    the environment terminated the episode at step t
  truncated   bool    (T,)    a time limit ended it (not predictable from frames)
  vision_id   str     ()      fingerprint of the V parameters that encoded it
RUN/series/initial_z.npz: mu, logvar (N, Z) of each episode's first frame (dream resets),
and `episode` (N,) their indices.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from worldmodels.data.atomic import atomic_save_npz, remove_stale_temporaries
from worldmodels.data.episodes import episode_index, episode_name, list_episodes, load_episode
from worldmodels.errors import DataError

SERIES_KEYS = ("mu", "logvar", "action", "reward", "done", "truncated", "vision_id")


def vision_fingerprint(params_path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(params_path).read_bytes()).hexdigest()[:16]


def load_series(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one series file, checking keys, shapes and finiteness."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in SERIES_KEYS if k not in data.files]
            if missing:
                raise DataError(f"series file {path} lacks {missing}; delete it and rerun `make series`")
            arrays = {k: data[k] for k in SERIES_KEYS}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"series file {path} is corrupt ({type(exc).__name__}); "
                        "delete it and rerun `make series`") from None
    steps = len(arrays["reward"])
    mu, logvar = arrays["mu"], arrays["logvar"]
    if mu.ndim != 2 or mu.shape[0] != steps or logvar.shape != mu.shape or arrays["action"].shape[0] != steps:
        raise DataError(f"series file {path} has inconsistent shapes; delete it and rerun `make series`")
    for key in ("mu", "logvar", "action", "reward"):
        if not np.isfinite(arrays[key]).all():
            raise DataError(f"series file {path} holds NaN or inf in '{key}'; delete it and rerun "
                            "`make series` (and check V)")
    return arrays


def list_series(folder: str | os.PathLike) -> list[Path]:
    return list_episodes(folder)  # same naming, same temporaries rule


def encode_rollouts(rollouts: str | os.PathLike, folder: str | os.PathLike, model, params,
                    vision_id: str, batch_size: int, frame_size: int, devices: int = 0,
                    progress: bool = True) -> dict[str, int]:
    """Encode every episode in `rollouts` that has no series file yet into `folder`.

    Frames go through V in fixed-size batches (one compiled shape; the last batch is padded),
    split over the host devices. A series file made by another V is refused."""
    import jax
    import jax.numpy as jnp

    from worldmodels.models.vision.layers import conv_compiler_options
    from worldmodels.runtime import data_parallel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    episodes = list_episodes(rollouts)
    if not episodes:
        raise DataError(f"no episodes in {rollouts}; run `make rollouts` first")
    done = {}
    for path in list_series(folder):
        with np.load(path, allow_pickle=False) as data:
            other = str(data["vision_id"]) if "vision_id" in data.files else "?"
        if other != vision_id:
            raise DataError(f"{path} was encoded by another V ({other}, now {vision_id}); "
                            f"delete {folder} and rerun `make series`")
        done[episode_index(path)] = path
    todo = [p for p in episodes if episode_index(p) not in done]

    _, batch_sharding, replicated = data_parallel(devices, batch_size)
    params = jax.device_put(params, replicated)
    encode = jax.jit(lambda p, x: model.encode(p, x.astype(jnp.float32) / 255.0),
                     compiler_options=conv_compiler_options())
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(episodes), initial=len(episodes) - len(todo), unit="ep", desc="series",
                   dynamic_ncols=True)
    try:
        for path in todo:
            episode = load_episode(path)
            obs = episode["obs"]
            if obs.shape[1:] != (frame_size, frame_size, 3):
                raise DataError(f"episode file {path} holds {obs.shape[1:]} frames, V takes "
                                f"({frame_size}, {frame_size}, 3); recollect with this config")
            mus, logvars = [], []
            for i in range(0, len(obs), batch_size):
                chunk = obs[i:i + batch_size]
                padded = np.zeros((batch_size, *obs.shape[1:]), np.uint8)
                padded[: len(chunk)] = chunk
                mu, logvar = encode(params, jax.device_put(padded, batch_sharding))
                mus.append(np.asarray(mu)[: len(chunk)])
                logvars.append(np.asarray(logvar)[: len(chunk)])
            atomic_save_npz(
                folder / episode_name(episode_index(path)), compress=False,
                mu=np.concatenate(mus).astype(np.float32),
                logvar=np.concatenate(logvars).astype(np.float32),
                action=episode["action"], reward=episode["reward"], done=episode["terminated"],
                truncated=episode["truncated"], vision_id=np.asarray(vision_id),
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    write_initial_z(folder)
    return {"encoded": len(todo), "skipped": len(done), "episodes": len(episodes)}


def write_initial_z(folder: str | os.PathLike) -> None:
    """initial_z.npz: the first mu/logvar of every series file, for dream resets."""
    paths = list_series(folder)
    mus, logvars, indices = [], [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            mus.append(data["mu"][0])
            logvars.append(data["logvar"][0])
        indices.append(episode_index(path))
    atomic_save_npz(Path(folder) / "initial_z.npz", compress=False, mu=np.stack(mus),
                    logvar=np.stack(logvars), episode=np.asarray(indices, np.int64))
