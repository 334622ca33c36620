"""The agent as a rollout policy that explores: what `make iterate` collects M's next data with.

The agent itself (V + M + C, the batch-invariant step, `load_agent`) lives in
`worldmodels.agent`; this module only mixes its actions with a random policy's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.agent import cached_world
from worldmodels.envs import get_env_module
from worldmodels.world_model import WorldModel


class AgentPolicy:
    """A rollout policy that plays an agent (V + M + C) and explores: at each step, with
    probability `explore`, the action comes from `random_policy` (the preset's rollout policy,
    which keeps running underneath, so a Brownian walk stays one walk) instead of from C.
    `make iterate` collects M's next data with it. Same interface as the random policies
    (`act(frame)` with the preprocessed frame), one episode each."""

    def __init__(self, world: WorldModel, step, controller: dict, random_policy, explore: float,
                 rng: np.random.Generator):
        self.step, self.random_policy, self.explore, self.rng = step, random_policy, float(explore), rng
        self.ctrl = jax.tree.map(lambda a: np.asarray(a)[None], controller)
        self.h = self.c = np.zeros((1, world.module.hidden), np.float32)
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

    world, step = cached_world(world_id, payload)
    _, unravel = ravel_pytree(world.controller_template())
    return AgentPolicy(world, step, unravel(jnp.asarray(flat_controller, jnp.float32)), random_policy,
                       explore, rng)
