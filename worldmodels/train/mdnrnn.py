"""Training M on the series: sequence batches, the loss, the resumable loop, held-out checks.

Sequences are windows of `seq_len` steps inside one episode. The whole series sits in memory
(it is small: 2·Z floats per frame), and each train step gathers its windows and samples
z ~ N(mu, sigma) inside the jitted step, so the host only draws B start indices per step.
The last step of an episode has no next frame: its z target is masked, while its reward and
done targets still train the heads (this is where done = 1 lives). With `mdnrnn.carry_state`
the windows are instead consecutive pieces of whole episodes (`Lanes`), and M's LSTM state
is carried from one train step to the next (truncated backpropagation through time).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodels.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from worldmodels.config import Config, MDNRNNConfig
from worldmodels.data.atomic import atomic_write_text
from worldmodels.data.episodes import holdout_split
from worldmodels.data.series import list_series, load_series
from worldmodels.errors import CheckpointError, ConfigError, DataError
from worldmodels.losses import binary_cross_entropy_with_logits, masked_mean, mdn_log_likelihood
from worldmodels.models.mdnrnn import MDNRNN, LSTMState, mixture_mean
from worldmodels.train.common import MetricsLog, TrainState, init_train_state
from worldmodels.train.scores import done_quality, rank_auc  # noqa: F401  (re-exported)
from worldmodels.world_model import (  # noqa: F401  (loading lives with the world model; re-exported)
    LATER_FIELDS,
    REWARD_HEADS,
    check_mdnrnn_meta,
    init_params,
    load_mdnrnn,
    load_mdnrnn_with_meta,
    make_module,
    mdnrnn_meta,
    trained_on_mu,
)
from worldmodels.world_model import MDNRNN_ARCHITECTURE_FIELDS as ARCHITECTURE_FIELDS  # noqa: F401

METRIC_COLUMNS = ("step", "loss", "z_nll", "reward_loss", "done_loss", "seq_per_s", "wall_s")
HELDOUT_COLUMNS = ("step", "wall_s", "heldout_z_nll", "heldout_next_z_mse", "heldout_copy_z_mse",
                   "heldout_reward_accuracy", "heldout_reward_auc", "heldout_reward_mse",
                   "heldout_episode_done_recall", "heldout_episode_done_false_rate", "heldout_done_recall_at_1pct",
                   "heldout_done_auc", "heldout_done_ece", "heldout_done_p_at_death", "heldout_done_recall",
                   "heldout_done_false_rate")
"""mdnrnn/heldout.csv (with `mdnrnn.eval_every`): the held-out learning curve."""


@dataclass(frozen=True)
class SeriesData:
    """All episodes of a series folder, concatenated (N frames in all, E episodes)."""

    mu: np.ndarray  # (N, Z)
    logvar: np.ndarray  # (N, Z)
    action: np.ndarray  # (N, A)
    reward: np.ndarray  # (N,)
    done: np.ndarray  # (N,) float 0/1
    episode_start: np.ndarray  # (N,) global index of the first frame of the frame's episode
    episode_end: np.ndarray  # (N,) global index of its last frame
    lengths: np.ndarray  # (E,)

    @classmethod
    def load(cls, paths: list[Path]) -> SeriesData:
        if not paths:
            raise DataError("no series files; run `make series` first")
        parts = [load_series(p) for p in paths]
        lengths = np.array([len(p["reward"]) for p in parts])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        return cls(
            mu=np.concatenate([p["mu"] for p in parts]).astype(np.float32),
            logvar=np.concatenate([p["logvar"] for p in parts]).astype(np.float32),
            action=np.concatenate([p["action"] for p in parts]).astype(np.float32),
            reward=np.concatenate([p["reward"] for p in parts]).astype(np.float32),
            done=np.concatenate([p["done"] for p in parts]).astype(np.float32),
            episode_start=np.repeat(starts, lengths), episode_end=np.repeat(ends - 1, lengths),
            lengths=lengths,
        )

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    def window_starts(self, seq_len: int) -> np.ndarray:
        """Global indices where a window of `seq_len` steps fits inside its episode."""
        return np.concatenate([s + np.arange(n - seq_len + 1) for s, n in zip(self.episode_starts(), self.lengths,
                                                                               strict=True)
                               if n >= seq_len] or [np.zeros(0, np.int64)])

    def end_window_starts(self, seq_len: int) -> np.ndarray:
        """Starts of the windows whose last step is an episode's terminal step (done = 1)."""
        ends = np.cumsum(self.lengths)
        fits = (self.lengths >= seq_len) & (self.done[ends - 1] > 0.5)
        return (ends - seq_len)[fits]

    def episode_starts(self) -> np.ndarray:
        """Global index of every episode's first frame (the `start_windows` starts)."""
        return np.cumsum(self.lengths) - self.lengths

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("mu", "logvar", "action", "reward", "done",
                                               "episode_start", "episode_end")}


def gather_batch(data: dict[str, jax.Array], starts: jax.Array, seq_len: int, key: jax.Array | None,
                 time_major: bool = False):
    """Windows starting at `starts` (B,): inputs and targets (B, L, ...), or (L, B, ...) with
    `time_major` (the gather writes either layout at the same cost); z sampled from
    N(mu, exp(logvar)) with `key`, or z = mu when key is None. A window may run past its
    episode's end (`start_windows`): `mask` is 0 on those steps, `z_mask` also on the last one."""
    idx = starts[:, None] + jnp.arange(seq_len + 1)[None]  # (B, L+1)
    end = data["episode_end"][starts][:, None]
    has_next = idx <= end
    idx = jnp.minimum(idx, end)
    if time_major:
        idx, has_next = idx.T, has_next.T  # (L+1, B)
    mu, logvar = data["mu"][idx], data["logvar"][idx]
    z = mu if key is None else mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    t = (slice(None, seq_len), slice(1, None))
    if not time_major:
        t = tuple((slice(None), s) for s in t)
    now = idx[t[0]]
    prev = jnp.where(now == data["episode_start"][now], 0.0, data["reward"][jnp.maximum(now - 1, 0)])
    return {
        "z": z[t[0]], "z_next": z[t[1]], "z_mask": has_next[t[1]], "mask": has_next[t[0]],
        "action": data["action"][now], "prev_reward": prev,
        "reward": data["reward"][now], "done": data["done"][now],
    }


def reward_target(cfg: MDNRNNConfig, reward: jax.Array, done: jax.Array) -> jax.Array:
    """The book's binary reward: 1 where reward > 0 and not done; or the raw reward."""
    if cfg.reward_head == "binary":
        return ((reward > 0) & (done < 0.5)).astype(jnp.float32)
    return reward


def make_loss(module: MDNRNN, cfg: MDNRNNConfig, fused: bool = True) -> Callable:
    """(params, time-major batch) -> (loss, metrics); every term is a mean. `fused` takes
    M's training path (`MDNRNN.sequence_nll`: the head and its NLL as one op); without it the
    plain path (`__call__`, then `mdn_log_likelihood`), kept as the reference a test pins."""

    def z_nll_of(params, x, batch, state):
        mask = batch["z_mask"].astype(x.dtype)
        if fused:
            weight = mask / jnp.maximum(jnp.sum(mask), 1.0)
            return module.apply({"params": params}, x, module.z_target(batch["z"], batch["z_next"]), weight,
                                state, True, method=MDNRNN.sequence_nll)
        final, out, _ = module.apply({"params": params}, x, state, time_major=True)
        target = module.z_target(batch["z"], batch["z_next"])
        ll = mdn_log_likelihood(out.logit_pi, out.mu, out.log_sigma, target).mean(-1)
        return -masked_mean(ll, mask), out.reward, out.done, final

    def loss_fn(params, batch, state: LSTMState | None = None):
        """-> (loss, metrics), or (loss, (metrics, final LSTM state)) when given a start `state`."""
        x = module.inputs(batch["z"], batch["action"], batch["prev_reward"])
        z_nll, reward, done, final = z_nll_of(params, x, batch, state)
        target = reward_target(cfg, batch["reward"], batch["done"])
        step_mask = batch["mask"].astype(x.dtype)  # 0 past an episode's end
        if cfg.reward_head == "binary":
            reward_loss = masked_mean(binary_cross_entropy_with_logits(reward, target), step_mask)
        elif cfg.reward_head == "regression":
            reward_loss = masked_mean(jnp.square(reward - target), step_mask)
        else:
            reward_loss = jnp.zeros(())
        done_loss = (masked_mean(binary_cross_entropy_with_logits(done, batch["done"]), step_mask)
                     if cfg.done_head else jnp.zeros(()))
        total = z_nll + cfg.reward_weight * reward_loss + cfg.done_weight * done_loss
        metrics = {"loss": total, "z_nll": z_nll, "reward_loss": reward_loss, "done_loss": done_loss}
        return total, (metrics if state is None else (metrics, final))

    return loss_fn


LSTM_PARAMS = ("w_x", "w_h", "b")
"""M's recurrent weights (`MDNRNN.setup`); `mdnrnn.head_only` leaves them as they are."""


def make_optimizer(cfg: MDNRNNConfig) -> optax.GradientTransformation:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate))
    if not cfg.head_only:
        return tx

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if any(getattr(k, "key", None) in LSTM_PARAMS for k in path) else "train",
            params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_train_step(module: MDNRNN, cfg: MDNRNNConfig, tx: optax.GradientTransformation) -> Callable:
    """(state, data arrays, starts (B,), key) -> (state, metrics). Not jitted."""
    loss_fn = make_loss(module, cfg)

    def train_step(state: TrainState, data, starts, key):
        batch = gather_batch(data, starts, cfg.seq_len, key if cfg.sample_z else None, time_major=True)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), metrics

    return train_step


def make_carry_train_step(module: MDNRNN, cfg: MDNRNNConfig, tx: optax.GradientTransformation) -> Callable:
    """`mdnrnn.carry_state`: (state, data, starts (B,), key, carry LSTMState (B, H), fresh (B,))
    -> (state, metrics, carry). Lanes that start an episode (`fresh`) begin from the zero
    state, the others from `carry`, the state their previous window ended in. Not jitted."""
    loss_fn = make_loss(module, cfg)

    def train_step(state: TrainState, data, starts, key, carry: LSTMState, fresh):
        batch = gather_batch(data, starts, cfg.seq_len, key if cfg.sample_z else None, time_major=True)
        keep = (~fresh)[:, None].astype(carry.h.dtype)
        start = LSTMState(carry.h * keep, carry.c * keep)
        (_, (metrics, final)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, start)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new, metrics, jax.lax.stop_gradient(final)

    return train_step


class Lanes:
    """`mdnrnn.carry_state`'s batch: lane j reads episode after episode (drawn uniformly from
    (seed, j, k)), `seq_len` frames per train step. Where every lane stands depends only on
    (seed, step), so a resumed run replays the same windows."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seq_len: int, seed: int):
        self.lengths, self.seq_len, self.seed = np.asarray(lengths), seq_len, seed
        self.count = np.zeros(batch_size, np.int64)  # episodes begun per lane, minus one
        self.episode = np.array([self._draw(j, 0) for j in range(batch_size)])
        self.offset = np.zeros(batch_size, np.int64)

    def _draw(self, lane: int, k: int) -> int:
        return int(np.random.default_rng([self.seed, lane, k]).integers(len(self.lengths)))

    def windows(self, episode_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(global start index of each lane's window (B,), fresh (B,): the window begins an episode)."""
        return episode_starts[self.episode] + self.offset, self.offset == 0

    def advance(self) -> None:
        self.offset += self.seq_len
        for j in np.flatnonzero(self.offset >= self.lengths[self.episode]):
            self.count[j] += 1
            self.episode[j], self.offset[j] = self._draw(j, int(self.count[j])), 0


def evaluate_one_step(module: MDNRNN, cfg: MDNRNNConfig, params, data: SeriesData,
                      windows: int = 64, seed: int = 0) -> dict[str, float]:
    """One-step prediction quality on held-out windows (z = mu, no sampling): the mixture's
    NLL per dimension, the MSE of its mean against the next mu, the MSE of simply copying
    the current z (a baseline a useful M must beat), and the reward/done heads' accuracy.
    With `start_windows`, the windows begin at episodes' first frames, as M is trained and
    dreams; with `carry_state`, they are whole episodes."""
    whole = cfg.start_windows > 0 or cfg.carry_state
    starts_all = data.episode_starts() if whole else data.window_starts(cfg.seq_len)
    if len(starts_all) == 0:
        return {}
    # carry_state trains on every frame: score whole episodes, not only their first seq_len.
    length = int(data.lengths.max()) if cfg.carry_state else cfg.seq_len
    starts = np.random.default_rng(seed).choice(starts_all, size=min(windows, len(starts_all)),
                                                 replace=False)

    @jax.jit
    def run(params, arrays, starts):
        batch = gather_batch(arrays, starts, length, None)
        x = module.inputs(batch["z"], batch["action"], batch["prev_reward"])
        _, out, _ = module.apply({"params": params}, x)
        mask, step_mask = batch["z_mask"], batch["mask"]
        ll = mdn_log_likelihood(out.logit_pi, out.mu, out.log_sigma,
                                module.z_target(batch["z"], batch["z_next"])).mean(-1)
        mean_err = jnp.square(module.next_z(batch["z"], mixture_mean(out)) - batch["z_next"]).mean(-1)
        copy_err = jnp.square(batch["z"] - batch["z_next"]).mean(-1)
        target = reward_target(cfg, batch["reward"], batch["done"])
        result = {"heldout_z_nll": -masked_mean(ll, mask),
                  "heldout_next_z_mse": masked_mean(mean_err, mask),
                  "heldout_copy_z_mse": masked_mean(copy_err, mask)}
        if cfg.reward_head == "binary":
            hit = ((out.reward > 0) == (target > 0.5)).astype(jnp.float32)
            result["heldout_reward_accuracy"] = masked_mean(hit, step_mask)
            result["heldout_reward_positive_rate"] = masked_mean(target, step_mask)
            result["reward_scores"] = (out.reward, target > 0.5, step_mask)  # for the AUC below
        elif cfg.reward_head == "regression":
            result["heldout_reward_mse"] = masked_mean(jnp.square(out.reward - target), step_mask)
        if cfg.done_head and whole:
            # Episodes from their start: does P(done) pass 0.5 at the deaths inside the windows,
            # and how often on the other steps?
            fired = (out.done > 0.0).astype(jnp.float32)
            death = (batch["done"] > 0.5) & batch["mask"]
            result["deaths"] = jnp.sum(death)
            result["heldout_episode_done_recall"] = masked_mean(fired, death)
            result["heldout_episode_done_false_rate"] = masked_mean(fired, ~death & batch["mask"])
            result["done_scores"] = (out.done, death, batch["mask"])  # for the AUC and calibration below
        return result

    arrays = jax.tree.map(jnp.asarray, data.arrays())
    result = run(params, arrays, jnp.asarray(starts))
    scores = result.pop("reward_scores", None)
    done_scores = result.pop("done_scores", None)
    result = {k: float(v) for k, v in result.items()}
    if done_scores is not None and result.get("deaths", 0) > 0:
        result.update(done_quality(*(np.asarray(a) for a in done_scores)))
    if scores is not None:
        # Accuracy rewards predicting "no reward" everywhere when rewards are rare (CarRacing's
        # random rollouts: 1.4 % of steps); the AUC says whether the head ranks rewarded steps
        # above the others at all (0.5: it does not).
        logit, positive, mask = (np.asarray(a) for a in scores)
        auc = rank_auc(logit[mask], positive[mask])
        if auc is not None:
            result["heldout_reward_auc"] = auc
    if not result.pop("deaths", 1):
        del result["heldout_episode_done_recall"]  # no death inside the windows
    end_starts = data.end_window_starts(cfg.seq_len)[:windows]
    if cfg.done_head and len(end_starts):
        # Windows ending at a death: does P(done) pass 0.5 there (what ends a dream), and
        # how often before it?
        batch = gather_batch(arrays, jnp.asarray(end_starts), cfg.seq_len, None)
        x = module.inputs(batch["z"], batch["action"], batch["prev_reward"])
        done = module.apply({"params": params}, x)[1].done > 0.0  # (B, L)
        result["heldout_done_recall"] = float(jnp.mean(done[:, -1]))
        result["heldout_done_false_rate"] = float(jnp.mean(done[:, :-1]))
    return result


def window_batch(cfg: MDNRNNConfig, step: int, starts: np.ndarray, end_starts: np.ndarray,
                 episode_starts: np.ndarray) -> jax.Array:
    """The B window starts of a train step: uniform windows, then `end_windows` and
    `start_windows` shares. They depend only on (seed, step): a resumed run sees the same batches."""
    rng = np.random.default_rng([cfg.seed, step])
    batch_starts = rng.choice(starts if len(starts) else episode_starts, size=cfg.batch_size)
    n_end = int(round(cfg.end_windows * cfg.batch_size)) if len(end_starts) else 0
    if n_end:
        batch_starts[:n_end] = rng.choice(end_starts, size=n_end)
    n_start = int(round(cfg.start_windows * cfg.batch_size))
    if n_start:
        batch_starts[n_end:n_end + n_start] = rng.choice(episode_starts, size=n_start)
    return jnp.asarray(batch_starts)


def split_series(folder: Path, holdout_fraction: float) -> tuple[list[Path], list[Path]]:
    paths = list_series(folder)
    if not paths:
        raise DataError(f"no series in {folder}; run `make series` first")
    return holdout_split(paths, holdout_fraction)


def train_mdnrnn(config: Config, run: str | Path, progress: bool = True,
                 progress_fn: Callable[[dict], None] | None = None,
                 series: Sequence[Path] | None = None) -> dict[str, Any]:
    """Train M on RUN/series (or on every folder of `series`, each split into train and
    held-out alike) into RUN/mdnrnn; resumes from RUN/mdnrnn/checkpoint.msgpack."""
    cfg = config.mdnrnn
    run = Path(run)
    out = run / "mdnrnn"
    out.mkdir(parents=True, exist_ok=True)
    train_paths, heldout_paths = [], []
    for folder in series or [run / "series"]:
        train, held = split_series(Path(folder), cfg.holdout_fraction)
        train_paths, heldout_paths = train_paths + train, heldout_paths + held
    data = SeriesData.load(train_paths)
    if data.latent_dim != config.vision.latent_dim:
        raise DataError(f"the series hold z of size {data.latent_dim} but vision.latent_dim is "
                        f"{config.vision.latent_dim}: they come from another V; rerun `make series`")
    if cfg.done_head and not np.any(data.done > 0.5):
        print("train-rnn: note: no training episode ends in done = 1 (a time limit is not a death), so the "
              "done head learns only 'never' and may still fire on frames it rarely saw, such as a dream's "
              "first; --mdnrnn.done_head false leaves episode ends to controller.dream_max_steps",
              file=sys.stderr)
    if not 0.0 <= cfg.end_windows + cfg.start_windows <= 1.0 or min(cfg.end_windows, cfg.start_windows) < 0:
        raise ConfigError("mdnrnn.end_windows and mdnrnn.start_windows are shares of a batch: each >= 0, "
                          f"together <= 1 (got {cfg.end_windows} and {cfg.start_windows})")
    starts = data.window_starts(cfg.seq_len)
    if len(starts) == 0 and cfg.end_windows + cfg.start_windows < 1.0 and not cfg.carry_state:
        raise DataError(f"no episode in {run / 'series'} has {cfg.seq_len} steps (longest: "
                        f"{data.lengths.max()}); lower --mdnrnn.seq_len or collect longer rollouts")
    end_starts, episode_starts = data.end_window_starts(cfg.seq_len), data.episode_starts()
    module = make_module(cfg, data.latent_dim, data.action_dim)
    tx = make_optimizer(cfg)
    state = init_train_state(lambda k: init_params(module, k), tx, jax.random.key(cfg.seed))
    # carry_state: the lanes' LSTM states are part of the checkpoint, so a resume continues them.
    carry = module.initial_state((cfg.batch_size,)) if cfg.carry_state else None
    ckpt_path = out / "checkpoint.msgpack"
    if ckpt_path.exists():
        check_mdnrnn_meta(read_checkpoint_meta(ckpt_path), cfg, data.latent_dim, data.action_dim, ckpt_path)
        if cfg.carry_state:
            restored, _ = load_checkpoint(ckpt_path, {"train": state, "carry": carry})
            state, carry = restored["train"], LSTMState(*restored["carry"])
        else:
            state, _ = load_checkpoint(ckpt_path, state)
    elif cfg.init_from:
        start = Path(cfg.init_from)
        if not start.exists():
            raise CheckpointError(f"mdnrnn.init_from: no M at {start}; train one first or clear the field")
        check_mdnrnn_meta(read_checkpoint_meta(start), cfg, data.latent_dim, data.action_dim, start)
        params, _ = load_checkpoint(start, jax.device_get(state.params))
        state = init_train_state(lambda k: params, tx, jax.random.key(cfg.seed))
    step = int(state.step)
    log = MetricsLog(out / "metrics.csv", METRIC_COLUMNS, resume_step=step)
    arrays = jax.tree.map(jnp.asarray, data.arrays())
    if cfg.carry_state:
        step_fn = jax.jit(make_carry_train_step(module, cfg, tx), donate_argnums=0)
        lanes = Lanes(data.lengths, cfg.batch_size, cfg.seq_len, cfg.seed)
        for _ in range(step):
            lanes.advance()  # where the lanes stood when the checkpoint was written
    else:
        step_fn = jax.jit(make_train_step(module, cfg, tx), donate_argnums=0)
    key = jax.random.key(cfg.seed + 1)
    meta = mdnrnn_meta(cfg, data.latent_dim, data.action_dim)

    heldout = SeriesData.load(heldout_paths) if heldout_paths else data
    heldout_log = MetricsLog(out / "heldout.csv", HELDOUT_COLUMNS, resume_step=step)

    def checkpoint():
        log.write()  # before the checkpoint, as in train_vision: a kill between loses no rows
        if cfg.eval_every:
            heldout_log.write()
        tree = {"train": state, "carry": carry} if cfg.carry_state else state
        save_checkpoint(ckpt_path, jax.device_get(tree), {**meta, "step": step})

    bar = None
    if progress and step < cfg.steps:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train M", dynamic_ncols=True)
    start = window_start = time.perf_counter()
    pending = []
    try:
        while step < cfg.steps:
            if cfg.carry_state:
                lane_starts, fresh = lanes.windows(episode_starts)
                state, metrics, carry = step_fn(state, arrays, jnp.asarray(lane_starts),
                                                jax.random.fold_in(key, step), carry, jnp.asarray(fresh))
                lanes.advance()
            else:
                state, metrics = step_fn(state, arrays, window_batch(cfg, step, starts, end_starts, episode_starts),
                                         jax.random.fold_in(key, step))
            step += 1
            pending.append(metrics)
            if step % cfg.log_every == 0 or step == cfg.steps:
                means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                now = time.perf_counter()
                rate = len(pending) * cfg.batch_size / (now - window_start)
                row = {"step": step, **means, "seq_per_s": rate, "wall_s": now - start}
                log.append(row)
                pending, window_start = [], now
                if not np.isfinite(means["loss"]):
                    raise DataError(f"M's loss became {means['loss']} at step {step}; check the series")
                if bar is not None:
                    bar.set_postfix(loss=f"{means['loss']:.3f}", seq_s=f"{row['seq_per_s']:.0f}")
                if progress_fn is not None:
                    progress_fn(row)
            if bar is not None:
                bar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0:
                heldout_log.append({"step": step, "wall_s": time.perf_counter() - start,
                                    **evaluate_one_step(module, cfg, state.params, heldout, cfg.eval_windows)})
            if step % cfg.checkpoint_every == 0 or (cfg.eval_every and step % cfg.eval_every == 0):
                checkpoint()
        checkpoint()
    finally:
        if bar is not None:
            bar.close()

    params = jax.device_get(state.params)
    refit = None
    if cfg.done_refit_steps > 0 and cfg.done_head:
        # The checkpoint keeps M as trained (more steps continue from it); params.msgpack and
        # everything downstream get the refit done column.
        from worldmodels.train.done_refit import refit_done_column

        if progress:
            print(f"train-rnn: refitting the done column on frozen h ({cfg.done_refit_steps} steps)", flush=True)
        params, refit = refit_done_column(module, params, data, heldout, cfg.done_refit_steps, cfg.done_refit_l2,
                                          seed=cfg.seed)
    save_checkpoint(out / "params.msgpack", params, {**meta, "step": step, **({"done_refit": refit} if refit else {})})
    summary = {"steps": step, "train_episodes": len(train_paths), "heldout_episodes": len(heldout_paths),
               "train_seconds_this_run": time.perf_counter() - start,
               **evaluate_one_step(module, cfg, params, heldout)}
    if refit is not None:
        summary["done_refit"] = refit
    if log.rows:
        summary["final_train_loss"] = log.rows[-1]["loss"]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    save_mdnrnn_pictures(out, module, cfg, params, heldout, log.rows, heldout_log.rows)
    if (run / "vision" / "params.msgpack").exists():
        save_dream_video(run, config, module, params, heldout_paths or train_paths)
    return summary


def save_mdnrnn_pictures(out: Path, module: MDNRNN, cfg: MDNRNNConfig, params, heldout: SeriesData,
                         rows, heldout_rows=()) -> None:
    """curves.png, heldout.png (the held-out learning curve, with `eval_every`) and reward.png
    (predicted vs actual reward along a held-out episode)."""
    from worldmodels.viz.plots import plot_curves, plot_series

    if rows:
        plot_curves(out / "curves.png", rows, x="step",
                    panels=[["loss", "z_nll"], ["reward_loss", "done_loss"]], title="M training")
    if heldout_rows:
        plot_curves(out / "heldout.png", heldout_rows, x="step",
                    panels=[["heldout_z_nll"], ["heldout_next_z_mse", "heldout_copy_z_mse"],
                            ["heldout_done_recall_at_1pct", "heldout_episode_done_recall", "heldout_done_auc",
                             "heldout_reward_auc"], ["heldout_done_ece"]],
                    title="M on held-out episodes")
    if cfg.reward_head == "none":
        return
    e = int(np.argmax(heldout.lengths))
    s, n = int(np.cumsum(heldout.lengths)[e] - heldout.lengths[e]), int(heldout.lengths[e])
    arrays = {k: jnp.asarray(v) for k, v in heldout.arrays().items()}
    batch = gather_batch(arrays, jnp.asarray([s]), n, None)
    x = module.inputs(batch["z"], batch["action"], batch["prev_reward"])
    _, pred, _ = jax.jit(module.apply)({"params": params}, x)
    actual = np.asarray(reward_target(cfg, batch["reward"], batch["done"]))[0]
    predicted = np.asarray(jax.nn.sigmoid(pred.reward) if cfg.reward_head == "binary" else pred.reward)[0]
    label = "P(reward > 0)" if cfg.reward_head == "binary" else "reward"
    plot_series(out / "reward.png", {f"actual {label}": actual, f"M's predicted {label}": predicted},
                xlabel="step of a held-out episode", title="M's reward head vs the episode")


def save_dream_video(run: Path, config: Config, module: MDNRNN, params, series_paths: list[Path],
                     max_steps: int = 300) -> None:
    """dream.mp4 and dream_strip.png: a recorded episode (left / top) beside M's open-loop dream
    from its first frame under the same actions, decoded by V (right / bottom)."""
    from worldmodels.data.episodes import load_episode
    from worldmodels.envs.dream import dream_with_actions
    from worldmodels.viz.images import image_grid, save_png, save_video
    from worldmodels.world_model import load_vision

    out = run / "mdnrnn"
    vision, vparams = load_vision(run / "vision", config.vision)
    rollout = series_paths[0].parent.parent / "rollouts" / series_paths[0].name  # RUN/series <-> RUN/rollouts
    if not rollout.exists():
        return
    series = load_series(series_paths[0])
    real = load_episode(rollout)["obs"][:max_steps]
    steps = len(real)
    zs = jax.jit(dream_with_actions, static_argnums=(0,))(
        module, params, jnp.asarray(series["mu"][0]), jnp.asarray(series["action"][:steps]),
        jax.random.key(config.mdnrnn.seed), config.mdnrnn.temperature, jnp.asarray(series["reward"][:steps]))
    dream = np.asarray(jax.jit(vision.decode)(vparams, zs))
    recon = np.asarray(jax.jit(vision.decode)(vparams, jnp.asarray(series["mu"][:steps])))
    side = np.concatenate([real.astype(np.float32) / 255.0, recon, dream], axis=2)
    save_video(out / "dream.mp4", side, fps=25, scale=3)
    pick = np.linspace(0, steps - 1, min(10, steps)).astype(int)
    save_png(out / "dream_strip.png", image_grid([real[pick], recon[pick], dream[pick]], scale=2,
                                                 labels=["real", "V(real)", "dream"], label_width=52))
