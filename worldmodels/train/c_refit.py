"""Carrying a controller across a retrained M (`iterate.refit_c`).

C reads [z, h], and h is M's LSTM state. Retraining all of M (LSTM included) on new data moves
what each unit of h means, so a C evolved on the old h steers on noise: in the CarRacing rounds
of docs/carracing.md the shipped C fell from 762 to 342 when only M changed under it. The refit
keeps C's driving and re-expresses it in the new h. Along recorded episodes (the agent's own, so
the states C meets) it reads h_old and h_new with the state carried, exactly as the agent does
(C at frame t sees z_t and the state before M consumes (z_t, a_t)), takes the old C's
pre-squash outputs y = C([z, h_old]) as targets, and solves the ridge regression
[z, h_new, 1] W ~ y in closed form. C is linear, so this is the best such C in least squares.

Targets are clipped to +-`CLIP` first: past it tanh is flat, and a large |y| the fit would chase
says nothing more about the action.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from worldmodels.errors import ConfigError
from worldmodels.models.controller import controller_output
from worldmodels.train.done_refit import episode_hiddens

CLIP = 3.0


def controller_inputs(module, params, data) -> np.ndarray:
    """[z_t, h_t] (N, Z + H) of every frame of `data`, in its order: h_t is M's state before it
    consumes frame t (zero at an episode's first frame), as `make_agent_step` feeds C."""
    hs, _, _ = episode_hiddens(module, params, data)
    h_in = np.zeros_like(hs)
    starts = data.episode_starts()
    for s, length in zip(starts, data.lengths, strict=True):
        h_in[s + 1:s + length] = hs[s:s + length - 1]
    return np.concatenate([data.mu, h_in], axis=1).astype(np.float32)


def check_refit(controller_cfg) -> None:
    """Refuse a C the refit cannot carry (before anything runs)."""
    if controller_cfg.features != "zh" or controller_cfg.hidden:
        raise ConfigError(f"iterate.refit_c carries a linear C on [z, h] (controller.features zh, hidden 0); "
                          f"this one has features '{controller_cfg.features}', hidden {controller_cfg.hidden}: "
                          "pass --iterate.refit_c false")


def ridge(x: np.ndarray, y: np.ndarray, l2: float, intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(w, b) minimising |x w + b - y|^2 + l2 * n * |w|^2 on standardised columns (b unpenalised;
    b = 0 without `intercept`)."""
    mean, scale = (x.mean(0) if intercept else np.zeros(x.shape[1], x.dtype)), x.std(0) + 1e-6
    xs = (x - mean) / scale
    y_mean = y.mean(0) if intercept else np.zeros(y.shape[1], y.dtype)
    gram = xs.T @ xs + l2 * len(x) * np.eye(x.shape[1])
    w_s = np.linalg.solve(gram, xs.T @ (y - y_mean))
    w = w_s / scale[:, None]
    return w, y_mean - mean @ w


def r2(pred: np.ndarray, target: np.ndarray) -> list[float]:
    return [float(1 - np.mean((pred[:, j] - target[:, j]) ** 2) / max(np.var(target[:, j]), 1e-12))
            for j in range(target.shape[1])]


def refit_controller(c_params: dict, old_world, new_world, train_data, held_data, squash,
                     l2: float = 1e-4) -> tuple[dict, dict[str, Any]]:
    """C re-expressed in `new_world`'s h (module docstring): the new params and a report of the
    fit on the held-out episodes: R^2 of the pre-squash outputs per action, and the mean absolute
    difference of the squashed actions (the old C on the old h vs the refit on the new h; also
    for the old C left unchanged on the new h, what the round would start from without the refit)."""
    def old_c(x):
        return np.clip(np.asarray(controller_output(c_params, jnp.asarray(x))), -CLIP, CLIP)

    def targets(data):
        return old_c(controller_inputs(old_world.module, old_world.rnn_params, data))

    x_train = controller_inputs(new_world.module, new_world.rnn_params, train_data)
    y_train = targets(train_data)
    w, b = ridge(x_train, y_train, l2, intercept="b" in c_params)
    params = {"w": jnp.asarray(w, jnp.float32)}
    if "b" in c_params:
        params["b"] = jnp.asarray(b, jnp.float32)
    report: dict[str, Any] = {"l2": l2, "train_frames": len(x_train),
                              "train_r2": r2(x_train @ w + b, y_train)}
    if held_data is not None:
        x_held = controller_inputs(new_world.module, new_world.rnn_params, held_data)
        y_held = targets(held_data)
        refit_y = x_held @ w + b
        stale_y = old_c(x_held)
        act = lambda y: np.asarray(squash(jnp.asarray(y)))  # noqa: E731
        report.update({
            "heldout_frames": len(x_held),
            "heldout_r2": r2(refit_y, y_held),
            "heldout_action_mae_refit": np.abs(act(refit_y) - act(y_held)).mean(0).tolist(),
            "heldout_action_mae_unchanged": np.abs(act(stale_y) - act(y_held)).mean(0).tolist(),
        })
    return params, report
