"""CarRacing glue: making the env and turning its 96x96 observation into the model's frame.

`preprocess_frame` is the one frame transform every stage uses (rollouts, the controller's
real-env loop, evaluation), so V always sees frames made the same way.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from PIL import Image

ACTION_DIM = 3
ACTION_NAMES = ("steer", "gas", "brake")
ACTION_LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)
# The bottom 12 rows of the 96x96 frame are the dashboard (speed, ABS, steering, gyro);
# like the original code we crop them and keep the 84x96 view of the track.
CROP_ROWS = 84
SOLVED_SCORE = 900.0
"""Mean return over 100 consecutive episodes that counts as solved."""
VIDEO_FPS, VIDEO_SCALE = 50, 4  # evaluation videos of the raw 96x96 observations


def make_env(env_id: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make with this package's ids registered."""
    import worldmodels  # noqa: F401  (registers FastCarRacing-v3)

    return gymnasium.make(env_id, **kwargs)


def preprocess_frame(obs: np.ndarray, size: int = 64) -> np.ndarray:
    """(96, 96, 3) uint8 observation -> (size, size, 3) uint8 frame.

    Crops the dashboard and resizes with Pillow's antialiased bilinear filter.
    """
    if obs.shape != (96, 96, 3) or obs.dtype != np.uint8:
        raise ValueError(f"expected a (96, 96, 3) uint8 CarRacing frame, got {obs.shape} {obs.dtype}")
    image = Image.fromarray(obs[:CROP_ROWS])
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def rollout_action(action: np.ndarray) -> np.ndarray:
    """A random policy's action -> the action taken and stored: CarRacing takes it as it is."""
    return action


def original_action(y: np.ndarray) -> np.ndarray:
    """A controller output y (3,) -> action as the original code mapped it (numpy): steer
    tanh, gas (tanh + 1) / 2, brake clip(tanh, 0, 1). Only the 'steady' rollout policy uses
    it (and C with `controller.action_map` 'original'); C's default squash maps the brake like the gas."""
    t = np.tanh(np.asarray(y, np.float64))
    return np.array([t[0], (t[1] + 1.0) / 2.0, np.clip(t[2], 0.0, 1.0)], np.float32)


def episode_stats(env, info: dict) -> dict[str, float]:
    """At an episode's end: the share of the track's tiles visited and whether the lap was
    finished (CarRacing-v3 and FastCarRacing-v3 keep the same counters)."""
    car = env.unwrapped
    tiles = len(getattr(car, "track", ()) or ())
    return {"tiles": car.tile_visited_count / tiles if tiles else float("nan"),
            "lap": float(bool(info.get("lap_finished", False)))}


def dream_action(action):
    """An action of the env's box -> the one M reads in the dream (jax): CarRacing's as it is."""
    return action


ACTION_MAPS = ("squash", "original")
"""`controller.action_map`'s values (see `worldmodels.config.ControllerConfig`)."""


def squash_action(y, action_map: str = "squash"):
    """Controller output (..., 3) -> CarRacing action: steer in [-1, 1], gas/brake in [0, 1]."""
    from worldmodels.models.controller import carracing_original, carracing_squash

    return carracing_original(y) if action_map == "original" else carracing_squash(y)
OBS_SHAPE = (96, 96, 3)
"""The raw observation `worldmodels.agent.Agent.act` takes."""
