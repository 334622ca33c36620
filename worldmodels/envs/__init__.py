"""Environments: the real ones (through gymnasium) and per-environment frame/action glue.

Each environment module (`carracing`, `doom`) exposes the same small surface:
``make_env(env_id, **kwargs)``, ``preprocess_frame(obs, size)``, ``ACTION_DIM``,
``rollout_action(a)`` (a random policy's action -> the one taken and stored),
``squash_action(y, action_map)`` (C's output -> action, in JAX; ``ACTION_MAPS`` lists the
mappings), ``dream_action(a)`` (an action of the
box ``ACTION_LOW``..``ACTION_HIGH`` -> what M reads), ``OBS_SHAPE`` (the raw observation
`Agent.act` takes), ``SOLVED_SCORE``, ``VIDEO_FPS`` and
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
    if "worldmodels/TakeCover-v1" not in gymnasium.registry:
        # VizdoomTakeCover-v1 as the Doom agent plays it: the screen, and a 1-d action in [-1, 1];
        # vizdoom is imported only when the env is made.
        gymnasium.register(id="worldmodels/TakeCover-v1", entry_point="worldmodels.envs.doom:make_take_cover",
                           max_episode_steps=2100)  # evaluation's cap (eval.max_steps)
    if "worldmodels/Dream-v0" not in gymnasium.registry:
        # M's dream: gym.make("worldmodels/Dream-v0", world_model=<run or agent dir>, temperature=1.0)
        gymnasium.register(id="worldmodels/Dream-v0", entry_point="worldmodels.envs.dream_gym:DreamGymEnv")


def get_env_module(name: str) -> ModuleType:
    """The environment module named by `EnvConfig.name`."""
    if name not in ENV_MODULES:
        raise ConfigError(
            f"unknown environment '{name}'; valid: {', '.join(sorted(ENV_MODULES))}"
        )
    return importlib.import_module(ENV_MODULES[name])


def controller_squash(config):
    """C's output -> the env's action, as `config.controller.action_map` says (a JAX function)."""
    import functools

    module = get_env_module(config.env.name)
    action_map = config.controller.action_map
    if action_map not in module.ACTION_MAPS:
        raise ConfigError(f"controller.action_map='{action_map}' is not one of {config.env.name}'s: "
                          f"{', '.join(module.ACTION_MAPS)}")
    return functools.partial(module.squash_action, action_map=action_map)
