"""The World Models agent acting in a real environment: V + M + C, batched over many envs.

One jitted call per time step acts for every environment a worker runs (each env may have
its own controller parameters): frames -> V.encode (z = mu) -> a = C([z, h]) -> M's LSTM
consumes [z, a] -> next h. Agents load from a run directory or a shipped agent directory;
both hold config.json, vision/params.msgpack, mdnrnn/params.msgpack and
controller/best.msgpack.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.checkpoint import load_checkpoint
from worldmodels.config import Config
from worldmodels.envs import get_env_module
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.models.controller import (
    controller_features,
    controller_output,
    feature_dim,
    init_controller,
)


@dataclass(frozen=True)
class WorldModel:
    """V and M with their parameters, and how C is shaped for them."""

    config: Config
    vision: Any  # VisionModel
    vision_params: Any
    module: Any  # MDNRNN
    rnn_params: Any
    rnn_on_mu: bool | None = None
    """M was last trained on mu (mdnrnn.sample_z false), so its dreams start at mu; None: its
    checkpoint does not say, the config's mdnrnn.sample_z decides."""

    @property
    def dreams_from_mu(self) -> bool:
        return not self.config.mdnrnn.sample_z if self.rnn_on_mu is None else self.rnn_on_mu

    @property
    def action_dim(self) -> int:
        return self.module.action_dim

    def payload(self) -> dict[str, Any]:
        """Plain numpy + JSON: what Ray ships to workers on any node (no shared disk needed)."""
        return {"config": self.config.to_json(), "vision": jax.device_get(self.vision_params),
                "rnn": jax.device_get(self.rnn_params)}

    def controller_template(self) -> dict[str, jax.Array]:
        cfg = self.config.controller
        n_in = feature_dim(cfg.features, self.module.latent_dim, self.module.hidden)
        return init_controller(jax.random.key(0), n_in, self.action_dim, cfg.hidden, cfg.bias)


def load_world_model(folder: str | Path, config: Config | None = None) -> WorldModel:
    """V and M from a run or agent directory (config from its config.json unless given)."""
    from worldmodels.train.mdnrnn import load_mdnrnn_with_meta, trained_on_mu
    from worldmodels.train.vision import load_vision

    folder = Path(folder)
    if config is None:
        config = load_agent_config(folder)
    vision, vparams = load_vision(folder / "vision", config.vision)
    module, rnn_params, meta = load_mdnrnn_with_meta(folder / "mdnrnn", config.mdnrnn, vision.latent_dim,
                                                     get_env_module(config.env.name).ACTION_DIM)
    return WorldModel(config, vision, vparams, module, rnn_params, trained_on_mu(meta))


def load_agent_config(folder: str | Path) -> Config:
    """The config an agent was trained with: config.json at the top, else the controller's."""
    folder = Path(folder)
    for candidate in (folder / "config.json", folder / "controller" / "config.json"):
        if candidate.exists():
            return Config.from_dict(json.loads(candidate.read_text()))
    raise ConfigError(f"{folder} is not an agent: it has no config.json (expected a run dir after "
                      "`make train-controller`, or a shipped agent such as agents/carracing)")


def load_controller(folder: str | Path, world: WorldModel, name: str = "best.msgpack"):
    path = Path(folder) / "controller" / name
    if not path.exists():
        raise CheckpointError(f"no controller at {path}; run `make train-controller` first")
    params, _ = load_checkpoint(path, world.controller_template())
    return params


def make_agent_step(world: WorldModel):
    """Jitted (ctrl params batched (n, ...), frames uint8 (n, S, S, 3), lstm (h, c) (n, H)
    [, explore]) -> (actions (n, A), new lstm). V and M parameters are closed-over constants.
    `explore` = (actions (n, A), use (n,) bool) replaces C's action where `use` (exploration in
    `make iterate`), so M's LSTM consumes the action actually taken."""
    from worldmodels.models.mdnrnn import MDNRNN, LSTMState

    squash = get_env_module(world.config.env.name).squash_action
    features = world.config.controller.features
    vision, module = world.vision, world.module
    vparams, rnn_params = world.vision_params, world.rnn_params

    def act(ctrl, frames, h, c, explore=None):
        z, _ = vision.encode(vparams, frames.astype(jnp.float32) / 255.0)
        obs = {"z": z, "h": h, "c": c}
        y = jax.vmap(controller_output)(ctrl, controller_features(obs, features))
        action = squash(y)
        if explore is not None:
            action = jnp.where(explore[1][:, None], explore[0], action)
        prev_reward = jnp.zeros(z.shape[:1])
        lstm = module.apply({"params": rnn_params}, LSTMState(h, c), module.inputs(z, action, prev_reward),
                            method=MDNRNN.step)[0]
        return action, lstm.h, lstm.c

    from worldmodels.train.common import conv_compiler_options

    return jax.jit(act, compiler_options=conv_compiler_options())


def world_from_payload(payload: dict[str, Any]) -> WorldModel:
    from worldmodels.models.vision import get_vision_model
    from worldmodels.train.mdnrnn import make_module

    config = Config.from_dict(json.loads(payload["config"]))
    vision = get_vision_model(config.vision)
    module = make_module(config.mdnrnn, vision.latent_dim, get_env_module(config.env.name).ACTION_DIM)
    return WorldModel(config, vision, payload["vision"], module, payload["rnn"])


_WORKER_CACHE: dict[str, tuple[WorldModel, Any]] = {}


def _cached_world(world_id: str, payload: dict[str, Any]) -> tuple[WorldModel, Any]:
    # Per-process cache: a Ray worker builds V and M and compiles the step once per world
    # model, then reuses them for every batch of episodes it is given.
    if world_id not in _WORKER_CACHE:
        _WORKER_CACHE.clear()
        world = world_from_payload(payload)
        _WORKER_CACHE[world_id] = (world, make_agent_step(world))
    return _WORKER_CACHE[world_id]


class AgentPolicy:
    """A rollout policy that plays an agent (V + M + C) and explores: at each step, with
    probability `explore`, the action comes from `random_policy` (the preset's rollout policy,
    which keeps running underneath, so a Brownian walk stays one walk) instead of from C.
    `make iterate` collects M's next data with it. Same interface as the random policies
    (`act(frame)` with the preprocessed frame), one episode each."""

    def __init__(self, world: WorldModel, step, controller: dict, random_policy, explore: float,
                 rng: np.random.Generator):
        self.step, self.random_policy, self.explore, self.rng = step, random_policy, float(explore), rng
        self.ctrl = jax.tree.map(lambda a: jnp.asarray(a)[None], controller)
        self.h = self.c = jnp.zeros((1, world.module.hidden), jnp.float32)
        self.rollout_action = get_env_module(world.config.env.name).rollout_action

    def act(self, frame: np.ndarray) -> np.ndarray:
        other = np.asarray(self.rollout_action(self.random_policy.act(frame)), np.float32)[None]
        use = np.array([self.rng.random() < self.explore])
        action, self.h, self.c = self.step(self.ctrl, frame[None], self.h, self.c, (other, use))
        return np.asarray(action[0], np.float32)


def agent_policy(world_id: str, payload: dict[str, Any], flat_controller: np.ndarray, random_policy,
                 explore: float, rng: np.random.Generator) -> AgentPolicy:
    """An `AgentPolicy` inside a Ray worker: V, M and the compiled step are built once per process."""
    from jax.flatten_util import ravel_pytree

    world, step = _cached_world(world_id, payload)
    _, unravel = ravel_pytree(world.controller_template())
    return AgentPolicy(world, step, unravel(jnp.asarray(flat_controller, jnp.float32)), random_policy,
                       explore, rng)


def run_episodes(world: WorldModel, step, controllers: list[dict], seeds: list[int], env_id: str,
                 max_steps: int, record: int | None = None, stall_steps: int = 0) -> dict[str, np.ndarray]:
    """Run len(seeds) episodes at once, episode i with controller i, one batched agent call
    per time step. Returns returns (n,), steps (n,), env steps/s, and with `record` = i the
    raw observations of episode i ("frames", (T+1, 96, 96, 3)). `stall_steps` > 0 ends an
    episode after that many steps in a row without a positive reward (training only)."""
    module = get_env_module(world.config.env.name)
    size = world.config.env.frame_size
    n = len(seeds)
    ctrl = jax.tree.map(lambda *a: jnp.stack(a), *controllers)
    envs = [module.make_env(env_id) for _ in range(n)]
    try:
        obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)]
        frames = np.stack([module.preprocess_frame(o, size) for o in obs])
        h = c = jnp.zeros((n, world.module.hidden), jnp.float32)
        returns, steps = np.zeros(n), np.zeros(n, np.int64)
        alive = np.ones(n, bool)
        since_reward = np.zeros(n, np.int64)
        recorded = [obs[record]] if record is not None else None
        start = time.perf_counter()
        for _ in range(max_steps):
            actions, h, c = step(ctrl, frames, h, c)
            actions = np.asarray(actions, np.float64)
            for i in np.flatnonzero(alive):
                o, r, terminated, truncated, _ = envs[i].step(actions[i].astype(np.float32))
                returns[i] += r
                steps[i] += 1
                frames[i] = module.preprocess_frame(o, size)
                if i == record:
                    recorded.append(o)
                since_reward[i] = 0 if r > 0 else since_reward[i] + 1
                if terminated or truncated or (stall_steps and since_reward[i] >= stall_steps):
                    alive[i] = False
            if not alive.any():
                break
        seconds = time.perf_counter() - start
    finally:
        for env in envs:
            env.close()
    out = {"returns": returns, "steps": steps, "env_steps_per_s": steps.sum() / max(seconds, 1e-9)}
    if record is not None:
        out["frames"] = np.stack(recorded)
    return out


def episodes_task(world_id: str, payload: dict[str, Any], flat_controllers: np.ndarray,
                  seeds: list[int], env_id: str, max_steps: int, record: int | None = None,
                  stall_steps: int = 0) -> dict[str, np.ndarray]:
    """A Ray task body: episodes for flat controller vectors (n, D) on `seeds`."""
    from jax.flatten_util import ravel_pytree

    world, step = _cached_world(world_id, payload)
    _, unravel = ravel_pytree(world.controller_template())
    controllers = [unravel(jnp.asarray(v, jnp.float32)) for v in flat_controllers]
    return run_episodes(world, step, controllers, seeds, env_id, max_steps, record=record, stall_steps=stall_steps)
