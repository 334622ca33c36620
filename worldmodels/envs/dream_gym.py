"""M's dream as a gymnasium env: `gym.make("worldmodels/Dream-v0", world_model="agents/carracing")`.

The same dream the controller is evolved in (`worldmodels.envs.dream.DreamEnv`, one jitted
step), wrapped for any gymnasium agent: the observation is what C sees ([z, h] for
CarRacing, [z, c, h] for Doom, or `observation="z"`), the action the real env's, the reward
and the episode's end come from M's heads. `render()` decodes z with V to a 64x64 RGB frame.

>>> env = gym.make("worldmodels/Dream-v0", world_model="agents/carracing", temperature=1.0,
...                render_mode="rgb_array")
>>> obs, _ = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
>>> frame = env.render()   # (64, 64, 3) uint8, V's decoding of the dreamed z

`terminated`: M's P(done) passed 0.5 (a dreamed death; `info["p_done"]` is P(done)).
`truncated`: the dream reached `max_steps` (default: the preset's controller.dream_max_steps).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.envs import get_env_module
from worldmodels.errors import ConfigError


class DreamGymEnv(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, world_model, temperature: float = 1.0, max_steps: int | None = None,
                 observation: str | None = None, render_mode: str | None = None):
        from worldmodels.envs.dream import DreamEnv, dream_params
        from worldmodels.models.controller import controller_features
        from worldmodels.world_model import WorldModel, load_dream_start, load_world_model

        if isinstance(world_model, str | Path):
            folder = Path(world_model)
            world = load_world_model(folder)
        elif isinstance(world_model, WorldModel):
            raise ConfigError("worldmodels/Dream-v0 takes the world model's folder (it reads where dreams start "
                              "from there), not a loaded WorldModel")
        else:
            raise ConfigError(f"world_model must be a run or agent folder, got {type(world_model).__name__}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode {render_mode!r}: this env renders 'rgb_array' only")
        self.world, self.render_mode = world, render_mode
        self.features = observation or world.config.controller.features
        if self.features not in ("z", "zh", "zch"):
            raise ConfigError(f"observation {self.features!r}: valid are 'z', 'zh', 'zch'")
        self.temperature = float(temperature)
        self.max_steps = int(max_steps or world.config.controller.dream_max_steps)
        env_module = get_env_module(world.config.env.name)
        self.metadata = {**self.metadata, "render_fps": env_module.VIDEO_FPS}
        self._params = dream_params(world, load_dream_start(folder, world), self.temperature, self.max_steps)
        self._dream = DreamEnv(world.module)
        dim = world.latent_dim + world.hidden * {"z": 0, "zh": 1, "zch": 2}[self.features]
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        low, high = np.asarray(env_module.ACTION_LOW, np.float32), np.asarray(env_module.ACTION_HIGH, np.float32)
        self.action_space = gymnasium.spaces.Box(low, high, dtype=np.float32)
        features, dream, params = self.features, self._dream, self._params
        taken = env_module.dream_action  # the action M was trained on (Doom: quantised to -1 / 0 / +1)

        def reset(key):
            obs, state = dream.reset(key, params)
            return controller_features(obs, features), state

        def step(key, state, action):
            action = taken(jnp.clip(action, low, high))
            obs, state, reward, done, info = dream.step(key, state, action, params)
            return controller_features(obs, features), state, reward, done, info["p_done"]

        self._reset, self._step = jax.jit(reset), jax.jit(step)
        self._state = self._key = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._key = jax.random.key(int(self.np_random.integers(2**31)))
        self._key, k = jax.random.split(self._key)
        obs, self._state = self._reset(k)
        return np.asarray(obs, np.float32), {}

    def step(self, action):
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        action = np.asarray(action, np.float32).reshape(self.action_space.shape)
        self._key, k = jax.random.split(self._key)
        obs, self._state, reward, done, p_done = self._step(k, self._state, action)
        p_done = float(p_done)
        died = bool(done) and p_done > 0.5
        truncated = bool(done) and not died
        return np.asarray(obs, np.float32), float(reward), died, truncated, {"p_done": p_done}

    def render(self):
        if self.render_mode != "rgb_array" or self._state is None:
            return None
        return np.asarray(self.world.decode(self._state.z[None])[0])
