"""Refitting M's done column on frozen hidden states (`mdnrnn.done_refit_steps`).

The done head is one column of M's output layer: P(done_t) = sigmoid(w . h_t + b). Trained with
the rest of M, it overfits the few deaths of the data: on the Doom M of docs/doom-curves (8,500
steps, 1,900 training episodes) it finds 98 % of the training deaths at 1 % false alarms and
71 % of held-out ones. The refit keeps the LSTM and every other column as they are (so h, and
what C reads, do not change), reads h_t along whole training episodes with the state carried,
as the dream runs, and fits (w, b) again by logistic regression with an L2 penalty, keeping the
step whose log loss on one half of the held-out episodes is lowest. The other half scores it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodels.losses import binary_cross_entropy_with_logits
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.train.scores import done_quality

EVAL_EVERY = 100  # refit steps between held-out log-loss checks


def episode_hiddens(module: MDNRNN, params, data, episodes: np.ndarray | None = None,
                    chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """h_t (N, H), M's done logit (N,) and done target (N,) of every frame of `episodes` (all
    by default), in that order, each episode read whole from its first frame with z = mu."""
    episodes = np.arange(len(data.lengths)) if episodes is None else np.asarray(episodes)
    starts = data.episode_starts()
    order = episodes[np.argsort(data.lengths[episodes], kind="stable")]  # chunks of similar length

    @jax.jit
    def run(params, z, a, r):
        _, out, hs = module.apply({"params": params}, module.inputs(z, a, r))
        return hs, out.done

    parts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for i in range(0, len(order), chunk):
        group = order[i:i + chunk]
        n = int(np.ceil(data.lengths[group].max() / 100) * 100)  # few distinct shapes to compile
        z = np.zeros((len(group), n, data.latent_dim), np.float32)
        a = np.zeros((len(group), n, data.action_dim), np.float32)
        r = np.zeros((len(group), n), np.float32)  # the previous step's reward (0 at the first)
        for j, e in enumerate(group):
            s, length = starts[e], data.lengths[e]
            z[j, :length], a[j, :length] = data.mu[s:s + length], data.action[s:s + length]
            r[j, 1:length] = data.reward[s:s + length - 1]
        hs, logit = (np.asarray(x) for x in run(params, jnp.asarray(z), jnp.asarray(a), jnp.asarray(r)))
        for j, e in enumerate(group):
            s, length = starts[e], data.lengths[e]
            parts[int(e)] = hs[j, :length], logit[j, :length], data.done[s:s + length] > 0.5
    return tuple(np.concatenate([parts[int(e)][k] for e in episodes]) for k in range(3))


def log_loss(logit: np.ndarray, target: np.ndarray) -> float:
    """Mean binary cross-entropy of logits against 0/1 targets (the loss M's done head trains on)."""
    return float(jnp.mean(binary_cross_entropy_with_logits(jnp.asarray(logit), jnp.asarray(target, jnp.float32))))


def fit_done_column(h_train, y_train, h_val, y_val, w0, b0, steps: int, l2: float,
                    learning_rate: float = 1e-3, batch_size: int = 8192, seed: int = 0):
    """Logistic regression of y on h from (w0, b0): Adam on minibatches, L2 on w; returns the
    (w, b) with the lowest validation log loss among the start and every EVAL_EVERY steps,
    with that step and its loss."""
    tx = optax.adam(learning_rate)
    p = {"w": jnp.asarray(w0, jnp.float32), "b": jnp.asarray(b0, jnp.float32)}
    opt = tx.init(p)
    h_train, y_train = jnp.asarray(h_train), jnp.asarray(y_train, jnp.float32)
    h_val, y_val = jnp.asarray(h_val), jnp.asarray(y_val, jnp.float32)

    def bce(p, h, y):
        return jnp.mean(binary_cross_entropy_with_logits(h @ p["w"] + p["b"], y))

    @jax.jit
    def step(p, opt, idx):
        g = jax.grad(lambda p: bce(p, h_train[idx], y_train[idx]) + l2 * jnp.sum(jnp.square(p["w"])))(p)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt

    val_loss = jax.jit(bce)
    rng = np.random.default_rng(seed)
    best = (float(val_loss(p, h_val, y_val)), 0, p)
    for i in range(1, steps + 1):
        p, opt = step(p, opt, jnp.asarray(rng.integers(0, len(h_train), min(batch_size, len(h_train)))))
        if i % EVAL_EVERY == 0 or i == steps:
            loss = float(val_loss(p, h_val, y_val))
            if loss < best[0]:
                best = (loss, i, p)
    loss, at, p = best
    return np.asarray(p["w"]), float(p["b"]), at, loss


def refit_done_column(module: MDNRNN, params, train, heldout, steps: int, l2: float,
                      max_frames: int = 1_000_000, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """`params` with the done column refit on frozen h (module docstring), and a report: the
    held-out halves' log loss, recall at 1 % false alarms and AUC before and after."""
    rng = np.random.default_rng(seed)
    episodes = rng.permutation(len(train.lengths))
    keep = episodes[np.cumsum(train.lengths[episodes]) <= max_frames]  # memory: N x H floats
    if len(keep) == 0:
        keep = episodes[:1]
    h_train, _, y_train = episode_hiddens(module, params, train, np.sort(keep))
    held = np.arange(len(heldout.lengths))
    select, score = held[0::2], held[1::2] if len(held) > 1 else held[0::2]
    h_sel, logit_sel, y_sel = episode_hiddens(module, params, heldout, select)
    h_score, logit_score, y_score = episode_hiddens(module, params, heldout, score)
    kernel, bias = np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])
    w, b, at, sel_loss = fit_done_column(h_train, y_train, h_sel, y_sel, kernel[:, -1], bias[-1], steps, l2,
                                         seed=seed)
    kernel, bias = kernel.copy(), bias.copy()
    kernel[:, -1], bias[-1] = w, b
    new = {**params, "head": {**params["head"], "kernel": kernel, "bias": bias}}
    new_logit = h_score @ w + b
    ones = np.ones(len(y_score), bool)

    def quality(logit):
        q = done_quality(logit, y_score, ones) if y_score.any() else {}
        return {"log_loss": log_loss(logit, y_score),
                **{k.removeprefix("heldout_done_"): v for k, v in q.items()}}

    report = {"steps": steps, "l2": l2, "kept_step": at, "train_frames": int(len(y_train)),
              "train_deaths": int(y_train.sum()), "select_episodes": int(len(select)),
              "score_episodes": int(len(score)), "select_log_loss_before": log_loss(logit_sel, y_sel),
              "select_log_loss_after": sel_loss, "before": quality(logit_score), "after": quality(new_logit)}
    return new, report
