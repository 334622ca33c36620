"""Training V: the train step, the resumable loop, held-out error and pictures.

`train_step(state, batch, key) -> (state, metrics)` is jitted once; with several host
devices the batch is split over them (data parallel) and the parameters are replicated.
Checkpoints (state + epoch/batch position) are written every `checkpoint_every` steps and
at the end of every epoch; a rerun continues from the last one with the same optimizer
state, step and data order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodels.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from worldmodels.config import Config, VisionConfig
from worldmodels.data.atomic import atomic_write_bytes, atomic_write_text
from worldmodels.data.frames import FrameStream, load_frames, split_episodes
from worldmodels.errors import ConfigError
from worldmodels.models.vision import VisionModel, get_vision_model
from worldmodels.train.common import (
    MetricsLog,
    TrainState,
    conv_compiler_options,
    data_parallel,
    init_train_state,
)
from worldmodels.world_model import VISION_ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS  # noqa: F401
from worldmodels.world_model import check_architecture, load_vision, vision_meta  # noqa: F401

METRIC_COLUMNS = ("step", "epoch", "loss", "recon", "kl", "images_per_s", "wall_s")


def make_optimizer(cfg: VisionConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.learning_rate)


def init_state(model: VisionModel, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    return init_train_state(model.init, tx, key)


def make_train_step(model: VisionModel, tx: optax.GradientTransformation) -> Callable:
    """(state, uint8 frames (B, S, S, 3), key) -> (state, metrics). Not jitted."""
    custom = getattr(model, "make_train_step", None)
    if custom is not None:  # models with frozen layers or phases bring their own step
        return custom(tx)

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array):
        frames = batch.astype(jnp.float32) / 255.0
        grad_fn = jax.value_and_grad(model.loss, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, frames, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def reconstruction_error(model: VisionModel, params, frames: np.ndarray, batch: int = 250) -> dict:
    """Held-out error of the deterministic reconstruction decode(mu): per-pixel MSE (in
    [0,1] units) and summed squared error per image (the loss's scale)."""
    recon = jax.jit(lambda p, x: model.decode(p, model.encode(p, x)[0]))
    sse = []
    for i in range(0, len(frames), batch):
        x = jnp.asarray(frames[i:i + batch], jnp.float32) / 255.0
        sse.append(np.asarray(jnp.sum(jnp.square(recon(params, x) - x), axis=(1, 2, 3))))
    sse = np.concatenate(sse)
    pixels = int(np.prod(frames.shape[1:]))
    return {"heldout_mse_per_pixel": float(sse.mean() / pixels),
            "heldout_sse_per_image": float(sse.mean()), "heldout_frames": len(frames)}


def heldout_frames(paths, frame_size: int, limit: int = 1000, seed: int = 0) -> np.ndarray:
    """Up to `limit` frames drawn from the first 20 episode files of `paths`, in order."""
    if not paths:
        return np.zeros((0, frame_size, frame_size, 3), np.uint8)
    frames = np.concatenate([load_frames(p, frame_size) for p in paths[:20]])
    take = np.random.default_rng(seed).permutation(len(frames))[:limit]
    return frames[np.sort(take)]


def train_vision(config: Config, run: str | Path, progress: bool = True,
                 progress_fn: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train V on RUN/rollouts into RUN/vision; resumes from RUN/vision/checkpoint.msgpack."""
    cfg = config.vision
    run = Path(run)
    out = run / "vision"
    out.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size < 1 or cfg.epochs < 0:
        raise ConfigError("vision.batch_size must be >= 1 and vision.epochs >= 0")
    model = get_vision_model(cfg)
    if model.frame_size != config.env.frame_size:
        raise ConfigError(f"vision model '{cfg.model}' takes {model.frame_size}px frames, "
                          f"env.frame_size is {config.env.frame_size}")
    train_paths, heldout_paths = split_episodes(run / "rollouts", cfg.holdout_fraction)
    stream = FrameStream(train_paths, cfg.batch_size, cfg.chunk_frames, config.env.frame_size,
                         seed=cfg.seed)
    per_epoch = stream.batches_per_epoch()
    total_steps = per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    tx = make_optimizer(cfg)
    mesh, batch_sharding, replicated = data_parallel(cfg.devices, cfg.batch_size)
    state = init_state(model, tx, jax.random.key(cfg.seed))
    ckpt_path = out / "checkpoint.msgpack"
    epoch, batch_in_epoch = 0, 0
    if ckpt_path.exists():
        check_architecture(read_checkpoint_meta(ckpt_path), cfg, ckpt_path)
        state, meta = load_checkpoint(ckpt_path, state)
        epoch, batch_in_epoch = meta["epoch"], meta["batch"]
    state = jax.device_put(state, replicated)
    step = int(state.step)
    log = MetricsLog(out / "metrics.csv", METRIC_COLUMNS, resume_step=step)
    rows = log.rows
    step_fn = jax.jit(make_train_step(model, tx), donate_argnums=0, compiler_options=conv_compiler_options())
    key = jax.random.key(cfg.seed + 1)

    def checkpoint(epoch_: int, batch_: int) -> None:
        host_state = jax.device_get(state)
        # Metrics first: a kill between the two leaves rows past the checkpoint, which the
        # resumed run drops; the other order would lose the rows since the last write.
        log.write()
        save_checkpoint(ckpt_path, host_state, {**vision_meta(cfg), "epoch": epoch_, "batch": batch_,
                                                "step": int(host_state.step)})

    bar = None
    if progress and step < total_steps:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", desc="train V", dynamic_ncols=True)
    start = time.perf_counter()
    window_start, window_images, pending = time.perf_counter(), 0, []
    try:
        while epoch < cfg.epochs and step < total_steps:
            for batch in stream.epoch(epoch, skip_batches=batch_in_epoch):
                batch = jax.device_put(batch, batch_sharding)
                state, metrics = step_fn(state, batch, jax.random.fold_in(key, step))
                step += 1
                batch_in_epoch += 1
                window_images += cfg.batch_size
                pending.append(metrics)
                if step % cfg.log_every == 0 or step == total_steps:
                    means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                    now = time.perf_counter()
                    row = {"step": step, "epoch": epoch + batch_in_epoch / per_epoch, **means,
                           "images_per_s": window_images / (now - window_start),
                           "wall_s": now - start}
                    rows.append(row)
                    pending, window_start, window_images = [], now, 0
                    if bar is not None:
                        bar.set_postfix(loss=f"{means['loss']:.1f}", img_s=f"{row['images_per_s']:.0f}")
                    if progress_fn is not None:
                        progress_fn(row)
                if bar is not None:
                    bar.update(1)
                if step % cfg.checkpoint_every == 0:
                    checkpoint(epoch, batch_in_epoch)
                if step >= total_steps:
                    break
            if batch_in_epoch >= per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
            checkpoint(epoch, batch_in_epoch)
    finally:
        if bar is not None:
            bar.close()

    params = jax.device_get(state.params)
    save_checkpoint(out / "params.msgpack", params, {**vision_meta(cfg), "step": step})
    heldout = heldout_frames(heldout_paths or train_paths[-1:], config.env.frame_size)
    summary = {"steps": step, "epochs": epoch, "train_episodes": len(train_paths),
               "heldout_episodes": len(heldout_paths), "train_seconds_this_run": time.perf_counter() - start,
               **reconstruction_error(model, params, heldout)}
    if rows:
        summary["final_train_loss"] = rows[-1]["loss"]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    save_vision_pictures(out, model, params, rows, heldout)
    return summary


def save_vision_pictures(out: Path, model: VisionModel, params, rows, heldout: np.ndarray) -> None:
    """curves.png, reconstructions.png (held-out inputs over reconstructions), traversals.png."""
    from worldmodels.viz.images import image_grid, save_png
    from worldmodels.viz.plots import plot_curves

    if rows:
        plot_curves(out / "curves.png", rows, x="step", panels=[["loss", "recon"], ["kl"]],
                    title="V training (per image)")
    if len(heldout) == 0:
        return
    encode, decode = jax.jit(model.encode), jax.jit(model.decode)
    pick = heldout[np.linspace(0, len(heldout) - 1, min(12, len(heldout))).astype(int)]
    x = jnp.asarray(pick, jnp.float32) / 255.0
    mu, _ = encode(params, x)
    recon = np.asarray(decode(params, mu))
    save_png(out / "reconstructions.png", image_grid([pick, recon], scale=2))

    # Traversals: the most active dimensions (largest spread of mu over held-out frames).
    x_all = jnp.asarray(heldout[:500], jnp.float32) / 255.0
    mu_all = np.asarray(encode(params, x_all)[0])
    spread = mu_all.std(axis=0)
    dims = np.argsort(-spread)[: min(6, model.latent_dim)]
    base = np.asarray(mu[0])
    values = np.linspace(-2.5, 2.5, 9)
    rows_img = []
    for d in dims:
        z = np.repeat(base[None], len(values), axis=0)
        z[:, d] = mu_all[:, d].mean() + values * spread[d]
        rows_img.append(np.asarray(decode(params, jnp.asarray(z))))
    labels = [f"z{d}" for d in dims]
    save_png(out / "traversals.png", image_grid(rows_img, scale=2, labels=labels, label_width=30))
    atomic_write_bytes(out / "active_dims.json",
                       json.dumps({"std_of_mu_per_dim": spread.round(4).tolist(),
                                   "dims_with_std_above_0.5": int((spread > 0.5).sum())}).encode())
