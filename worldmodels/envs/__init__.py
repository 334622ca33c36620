"""Environments: the real ones (through gymnasium) and per-environment frame/action glue.

Each environment module (`carracing`, `doom`) exposes the same small surface:
``make_env(env_id, **kwargs)``, ``preprocess_frame(obs, size)``, ``ACTION_DIM``,
``rollout_action(a)`` (a random policy's action -> the one taken and stored),
``squash_action(y)`` (C's output -> action, in JAX), ``SOLVED_SCORE``, ``VIDEO_FPS`` and
``VIDEO_SCALE`` (evaluation videos);
the pipeline looks it up by `EnvConfig.name` and never forks per environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import gymnasium

from worldmodels.errors import ConfigError

ENV_MODULES = {
    "carracing": "worldmodels.envs.carracing",
    "doom": "worldmodels.envs.doom",
}


def register_envs() -> None:
    """Register the gymnasium ids this package provides (idempotent)."""
    if "FastCarRacing-v3" not in gymnasium.registry:
        gymnasium.register(
            id="FastCarRacing-v3",
            entry_point="worldmodels.envs.fast_carracing:FastCarRacing",
            max_episode_steps=1000,
            reward_threshold=900,
        )


def get_env_module(name: str) -> ModuleType:
    """The environment module named by `EnvConfig.name`."""
    if name not in ENV_MODULES:
        raise ConfigError(
            f"unknown environment '{name}'; valid: {', '.join(sorted(ENV_MODULES))}"
        )
    return importlib.import_module(ENV_MODULES[name])
