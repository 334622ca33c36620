"""The World Models agent: V + M + C acting on raw observations, one or a batch of envs.

>>> import gymnasium as gym
>>> from worldmodels import load_agent
>>> agent = load_agent("agents/carracing")
>>> env = gym.make(agent.env_id)
>>> obs, _ = env.reset(seed=7); agent.reset()
>>> while True:
...     obs, r, term, trunc, _ = env.step(agent.act(obs))
...     if term or trunc: break

One step: frame -> V.encode (z = mu) -> a = C([z, h] or [z, c, h]) -> M's LSTM reads [z, a]
-> next h. A seed's return is a property of the agent and the seed: XLA:CPU rounds a matrix
product differently at different batch sizes, and CarRacing amplifies the last bit of an
action into another lap, so every step is computed in fixed blocks of `AGENT_BATCH` rows
(padded), whatever the number of envs; a row's result does not depend on its block-mates
(a test pins both). Evaluation, real-env training and this API share that step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.checkpoint import load_checkpoint
from worldmodels.envs import controller_squash, get_env_module
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.models.controller import controller_features, controller_output
from worldmodels.world_model import WorldModel, load_agent_config, load_world_model, world_from_payload

AGENT_BATCH = 8
"""Rows of every compiled agent step: n envs run in ceil(n / 8) calls of exactly 8 rows."""
AGENT_FORMAT = 1
"""agent.json's `format`: what `load_agent` reads (agents without the field are format 1)."""
SATURATED = 0.9
"""|action[0]| above this counts as a saturated action (CarRacing: full steering lock)."""


def load_controller(folder: str | Path, world: WorldModel, name: str = "best.msgpack"):
    path = Path(folder) / "controller" / name
    if not path.exists():
        raise CheckpointError(f"no controller at {path}; run `make train-controller` first")
    params, _ = load_checkpoint(path, world.controller_template())
    return params


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """(m, ...) -> (rows, ...), the extra rows copies of row 0 (valid inputs, results dropped)."""
    if len(a) == rows:
        return a
    return np.concatenate([a, np.repeat(a[:1], rows - len(a), axis=0)])


def make_agent_step(world: WorldModel, block: int = AGENT_BATCH):
    """(ctrl params batched (n, ...), frames uint8 (n, S, S, 3), lstm (h, c) (n, H)
    [, explore]) -> (actions (n, A), new h, new c), numpy. V and M parameters are closed-over
    constants. `explore` = (actions (n, A), use (n,) bool) replaces C's action where `use`
    (exploration in `make iterate`), so M's LSTM consumes the action actually taken.

    Any n runs as blocks of exactly `block` rows through one compiled program, so row i's
    result depends on its own inputs only (see the module docstring)."""
    from worldmodels.models.mdnrnn import MDNRNN, LSTMState
    from worldmodels.models.vision.layers import conv_compiler_options

    squash = controller_squash(world.config)
    features = world.config.controller.features
    vision, module = world.vision, world.module
    vparams, rnn_params = world.vision_params, world.rnn_params

    def act(ctrl, frames, h, c, other, use):
        z, _ = vision.encode(vparams, frames.astype(jnp.float32) / 255.0)
        obs = {"z": z, "h": h, "c": c}
        y = jax.vmap(controller_output)(ctrl, controller_features(obs, features))
        action = jnp.where(use[:, None], other, squash(y))
        prev_reward = jnp.zeros(z.shape[:1])
        lstm = module.apply({"params": rnn_params}, LSTMState(h, c), module.inputs(z, action, prev_reward),
                            method=MDNRNN.step)[0]
        return action, lstm.h, lstm.c

    compiled = jax.jit(act, compiler_options=conv_compiler_options())
    action_dim = world.action_dim

    def step(ctrl, frames, h, c, explore=None):
        frames, h, c = np.asarray(frames), np.asarray(h, np.float32), np.asarray(c, np.float32)
        n = len(frames)
        if explore is None:
            other, use = np.zeros((n, action_dim), np.float32), np.zeros(n, bool)
        else:
            other, use = np.asarray(explore[0], np.float32), np.asarray(explore[1], bool)
        ctrl = jax.tree.map(np.asarray, ctrl)
        actions, hs, cs = [], [], []
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            pad = lambda a, lo=lo, hi=hi: _pad_rows(a[lo:hi], block)
            out = compiled(jax.tree.map(pad, ctrl), pad(frames), pad(h), pad(c), pad(other), pad(use))
            for acc, value in zip((actions, hs, cs), out, strict=True):
                acc.append(np.asarray(value)[: hi - lo])
        return np.concatenate(actions), np.concatenate(hs), np.concatenate(cs)

    return step


class Agent:
    """A loaded agent: `act(obs)` for one env's raw observation (CarRacing: (96, 96, 3) uint8;
    Doom: the (240, 320, 3) screen) or a batch (n, ...) from a gymnasium vector env, returning
    the action (A,) or (n, A). M's state is per env: `reset()` before a new episode (all),
    `reset(n)` for n envs, `reset(mask)` for the envs where `mask` (n,) is true."""

    def __init__(self, world: WorldModel, controller: dict, folder: Path | None = None,
                 info: dict | None = None):
        self.world, self.controller, self.folder, self.info = world, controller, folder, info or {}
        self.env_module = get_env_module(world.config.env.name)
        self.env_id = getattr(self.env_module, "AGENT_ENV_ID", world.config.env.eval_id)
        """The gymnasium id to play it in: the env it was evaluated in."""
        self.obs_shape = tuple(self.env_module.OBS_SHAPE)
        self._step = make_agent_step(world)
        self._h = self._c = None

    def __repr__(self) -> str:
        return f"Agent({str(self.folder)!r}, env_id={self.env_id!r})"

    def reset(self, which: int | np.ndarray | None = None) -> None:
        hidden = self.world.hidden
        if which is None:
            self._h = self._c = None  # sized by the next act
        elif np.ndim(which) == 0:
            self._h = self._c = np.zeros((int(which), hidden), np.float32)
        else:
            mask = np.asarray(which, bool)
            if self._h is None or len(self._h) != len(mask):
                self._h = self._c = np.zeros((len(mask), hidden), np.float32)
            else:
                self._h, self._c = self._h.copy(), self._c.copy()
                self._h[mask] = 0.0
                self._c[mask] = 0.0

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs)
        single = obs.shape == self.obs_shape
        if obs.dtype != np.uint8 or not (single or obs.shape[1:] == self.obs_shape):
            raise ValueError(f"act takes a {self.obs_shape} uint8 observation of {self.env_id} or a batch "
                             f"(n, {', '.join(map(str, self.obs_shape))}), got {obs.shape} {obs.dtype}")
        batch = obs[None] if single else obs
        n = len(batch)
        if self._h is None:
            self.reset(n)
        elif len(self._h) != n:
            raise ValueError(f"act got {n} observations but M's state holds {len(self._h)} envs; "
                             f"call reset({n}) first")
        size = self.world.frame_size
        frames = np.stack([self.env_module.preprocess_frame(o, size) for o in batch])
        ctrl = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (n, *np.shape(a))), self.controller)
        actions, self._h, self._c = self._step(ctrl, frames, self._h, self._c)
        actions = actions.astype(np.float32)
        return actions[0] if single else actions


def load_agent(folder: str | Path) -> Agent:
    """V, M and C from a shipped agent dir (agents/carracing) or a run dir with a trained C."""
    folder = Path(folder)
    info = {}
    meta = folder / "agent.json"
    if meta.exists():
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{meta} is not valid JSON ({exc}); re-export the agent with `make export-agent`") \
                from None
        version = info.get("format", 1)
        if version != AGENT_FORMAT:
            raise ConfigError(f"{folder} is an agent of format {version}; this version of worldmodels reads "
                              f"format {AGENT_FORMAT}: re-export it with `make export-agent` or use a matching "
                              "worldmodels")
    config = load_agent_config(folder)
    world = load_world_model(folder, config)
    if not (folder / "controller" / "best.msgpack").exists():
        raise CheckpointError(f"{folder} has V and M but no controller (controller/best.msgpack); run "
                              f"`make train-controller RUN={folder}` first")
    return Agent(world, load_controller(folder, world), folder, info)


# ---- episodes in real envs, for evaluation and real-env training --------------------------


def run_episodes(world: WorldModel, step, controllers: list[dict], seeds: list[int], env_id: str,
                 max_steps: int, record: int | None = None, stall_steps: int = 0) -> dict[str, np.ndarray]:
    """Run len(seeds) episodes at once, episode i with controller i, one batched agent call
    per time step. Returns returns (n,), steps (n,), env steps/s, and with `record` = i the
    raw observations of episode i ("frames", (T+1, ...)). `stall_steps` > 0 ends an episode
    after that many steps in a row without a positive reward (training only)."""
    module = get_env_module(world.config.env.name)
    size = world.config.env.frame_size
    n = len(seeds)
    ctrl = jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *controllers)
    envs = [module.make_env(env_id) for _ in range(n)]
    try:
        obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
        frames = np.stack([module.preprocess_frame(o, size) for o in obs])
        h = c = np.zeros((n, world.module.hidden), np.float32)
        returns, steps = np.zeros(n), np.zeros(n, np.int64)
        action_sum = np.zeros((n, module.ACTION_DIM))  # how it drives: mean action, saturated share
        saturated = np.zeros(n, np.int64)
        extra = [{} for _ in range(n)]
        alive = np.ones(n, bool)
        since_reward = np.zeros(n, np.int64)
        recorded = [obs[record]] if record is not None else None
        start = time.perf_counter()
        for _ in range(max_steps):
            live = np.flatnonzero(alive)
            # Only the episodes still running are stepped: the rows are independent, so who
            # else is in the batch changes nothing.
            live_ctrl = jax.tree.map(lambda a, live=live: a[live], ctrl)
            actions, h_live, c_live = step(live_ctrl, frames[live], h[live], c[live])
            h, c = h.copy(), c.copy()
            h[live], c[live] = h_live, c_live
            for j, i in enumerate(live):
                a = actions[j].astype(np.float32)
                o, r, terminated, truncated, info = envs[i].step(a)
                returns[i] += r
                steps[i] += 1
                action_sum[i] += a
                saturated[i] += abs(float(a[0])) > SATURATED
                frames[i] = module.preprocess_frame(o, size)
                if i == record:
                    recorded.append(o)
                since_reward[i] = 0 if r > 0 else since_reward[i] + 1
                if terminated or truncated or (stall_steps and since_reward[i] >= stall_steps):
                    alive[i] = False
                    if hasattr(module, "episode_stats"):
                        extra[i] = module.episode_stats(envs[i], info)
            if not alive.any():
                break
        seconds = time.perf_counter() - start
        for i in np.flatnonzero(alive):  # cut at max_steps
            if hasattr(module, "episode_stats"):
                extra[i] = module.episode_stats(envs[i], {})
    finally:
        for env in envs:
            env.close()
    out = {"returns": returns, "steps": steps, "env_steps_per_s": steps.sum() / max(seconds, 1e-9),
           "action_mean": (action_sum / np.maximum(steps, 1)[:, None]).astype(np.float32),
           "saturated": (saturated / np.maximum(steps, 1)).astype(np.float32)}
    for key in sorted({k for e in extra for k in e}):
        out[f"stat_{key}"] = np.array([e.get(key, np.nan) for e in extra], np.float32)
    if record is not None:
        out["frames"] = np.stack(recorded)
    return out


_WORKER_CACHE: dict[str, tuple[WorldModel, Any]] = {}


def cached_world(world_id: str, payload: dict[str, Any]) -> tuple[WorldModel, Any]:
    """(world, compiled agent step) once per process and world model: a Ray worker builds V
    and M and compiles the step once, then reuses them for every batch of episodes."""
    if world_id not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        world = world_from_payload(payload)
        _WORKER_CACHE[world_id] = (world, make_agent_step(world))
    return _WORKER_CACHE[world_id]


def episodes_task(world_id: str, payload: dict[str, Any], flat_controllers: np.ndarray,
                  seeds: list[int], env_id: str, max_steps: int, record: int | None = None,
                  stall_steps: int = 0) -> dict[str, np.ndarray]:
    """A Ray task body: episodes for flat controller vectors (n, D) on `seeds`."""
    from jax.flatten_util import ravel_pytree

    world, step = cached_world(world_id, payload)
    _, unravel = ravel_pytree(world.controller_template())
    controllers = [unravel(jnp.asarray(v, jnp.float32)) for v in flat_controllers]
    return run_episodes(world, step, controllers, seeds, env_id, max_steps, record=record, stall_steps=stall_steps)
