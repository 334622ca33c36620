"""DoomTakeCover glue: `VizdoomTakeCover-v1` (the vizdoom wheel) seen as the pipeline sees envs.

The game's observation is a dict ({'screen': (240, 320, 3) uint8, 'gamevariables': health})
and its action `Discrete(3)` (0 = stay, 1 = MOVE_RIGHT, 2 = MOVE_LEFT, from vizdoom's
button map of take_cover.cfg). `make_env` wraps it so the rest of the pipeline sees a screen
array and a 1-d action in [-1, 1], as the original code did: C has one output, squashed by
tanh and cut at ±1/3 into left (-1) / stay (0) / right (+1). The action episodes store and M
is trained on is that quantised value, so M sees in the dream exactly what it saw in the data.
Reward is +1 per tic alive: an episode's return is the number of frames survived.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import gymnasium
import numpy as np
from PIL import Image

ACTION_DIM = 1
ACTION_NAMES = ("move",)
ACTION_LOW, ACTION_HIGH = np.array([-1.0], np.float32), np.array([1.0], np.float32)
ACTION_THRESHOLD = 1.0 / 3.0
"""|tanh(y)| above this moves (the original code's threshold)."""
SCREEN_SHAPE = (240, 320, 3)
OBS_SHAPE = SCREEN_SHAPE
"""The raw observation `worldmodels.agent.Agent.act` takes: the screen."""
AGENT_ENV_ID = "worldmodels/TakeCover-v1"
"""What `Agent.env_id` names: VizdoomTakeCover-v1 seen through `TakeCover` (screen in, 1-d action)."""
SOLVED_SCORE = 750.0
"""Mean steps survived over 100 consecutive episodes that counts as solved."""
VIDEO_FPS, VIDEO_SCALE = 35, 1  # evaluation videos of the raw 320x240 screens (Doom's 35 tics/s)
# Discrete index of vizdoom's Discrete(3) for action -1 (left), 0 (stay), +1 (right).
_INDEX = {-1: 2, 0: 0, 1: 1}
_ENV_COUNT = itertools.count()


class TakeCover(gymnasium.Wrapper):
    """VizdoomTakeCover-v1 with the screen as observation and a 1-d action in [-1, 1]
    (below -1/3: left, above 1/3: right, else stay). The game itself is untouched."""

    def __init__(self, env: gymnasium.Env, settings_path: str | None = None):
        super().__init__(env)
        self.settings_path = settings_path
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.observation_space = env.observation_space["screen"]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs["screen"], info

    def step(self, action):
        (a,) = rollout_action(np.asarray(action, np.float32).reshape(ACTION_DIM))
        obs, reward, terminated, truncated, info = self.env.step(_INDEX[int(a)])
        return obs["screen"], float(reward), terminated, truncated, info

    def close(self):
        super().close()  # the engine writes its settings file as it shuts down
        if self.settings_path:
            try:
                os.remove(self.settings_path)
            except FileNotFoundError:
                pass


def make_env(env_id: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make of a vizdoom id (registered by importing vizdoom's wrapper), wrapped."""
    import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom* ids)

    env = gymnasium.make(env_id, **kwargs)
    # The engine writes its settings file (_vizdoom.ini) into the working directory unless told
    # otherwise; one per env in the temp dir keeps the repository clean and writers apart, and
    # close() removes it (the engine still makes an empty _vizdoom/ folder in the working dir).
    path = os.path.join(tempfile.gettempdir(), f"_vizdoom-{os.getpid()}-{next(_ENV_COUNT)}.ini")
    env.unwrapped.game.set_doom_config_path(path)
    return TakeCover(env, path)


def make_take_cover(**kwargs) -> gymnasium.Env:
    """The entry point of `worldmodels/TakeCover-v1` (`AGENT_ENV_ID`): the game as the agent plays it."""
    return make_env("VizdoomTakeCover-v1", **kwargs)


def preprocess_frame(obs: np.ndarray, size: int = 64) -> np.ndarray:
    """(240, 320, 3) uint8 screen -> (size, size, 3) uint8: the whole screen resized (the paper),
    with Pillow's bilinear filter like CarRacing's frames."""
    if obs.shape != SCREEN_SHAPE or obs.dtype != np.uint8:
        raise ValueError(f"expected a {SCREEN_SHAPE} uint8 VizDoom screen, got {obs.shape} {obs.dtype}")
    return np.asarray(Image.fromarray(obs).resize((size, size), Image.Resampling.BILINEAR))


def rollout_action(action: np.ndarray) -> np.ndarray:
    """A random policy's action in [-1, 1] -> the action taken and stored: -1, 0 or +1.
    A uniform sample gives each of the three an equal chance."""
    a = np.asarray(action, np.float32)
    return np.where(a > ACTION_THRESHOLD, 1.0, np.where(a < -ACTION_THRESHOLD, -1.0, 0.0)).astype(np.float32)


def dream_action(action):
    """An action in [-1, 1] -> the one M reads in the dream (jax): -1 / 0 / +1, as `TakeCover` takes it."""
    import jax.numpy as jnp

    return jnp.where(action > ACTION_THRESHOLD, 1.0, jnp.where(action < -ACTION_THRESHOLD, -1.0, 0.0))


ACTION_MAPS = ("squash",)


def squash_action(y, action_map: str = "squash"):
    """Controller output (..., 1) -> -1 / 0 / +1 (jax): tanh, then the ±1/3 cut."""
    import jax.numpy as jnp

    t = jnp.tanh(y)
    return jnp.where(t > ACTION_THRESHOLD, 1.0, jnp.where(t < -ACTION_THRESHOLD, -1.0, 0.0))
