"""Random data-collection policies. Each is seeded per episode, so an episode is
reproducible from (base seed, episode index) alone, wherever it runs."""

from __future__ import annotations

import numpy as np

from worldmodels.errors import ConfigError


class RandomPolicy:
    """Uniform action in [low, high], resampled every `repeat` steps (the book's
    `action_refresh_rate`)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, repeat: int, rng: np.random.Generator):
        self.low, self.high, self.repeat, self.rng = low, high, max(1, repeat), rng
        self.t = 0
        self.action = None

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        if self.t % self.repeat == 0:
            self.action = self.rng.uniform(self.low, self.high).astype(np.float32)
        self.t += 1
        return self.action


class BrownianPolicy:
    """Actions follow a clipped Brownian motion: a_{t+1} = clip(a_t + sqrt(dt) * N(0, I)).
    Smooth, so the car drives along the track for a while instead of jittering in place."""

    def __init__(self, low: np.ndarray, high: np.ndarray, dt: float, rng: np.random.Generator):
        self.low, self.high, self.scale, self.rng = low, high, float(np.sqrt(dt)), rng
        self.action = rng.uniform(low, high).astype(np.float32)

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        action = self.action
        step = self.scale * self.rng.standard_normal(action.shape)
        self.action = np.clip(action + step, self.low, self.high).astype(np.float32)
        return action


POLICIES = ("random", "brownian")


def make_random_policy(name: str, low: np.ndarray, high: np.ndarray, *, action_repeat: int,
                       brownian_dt: float, rng: np.random.Generator):
    if name == "random":
        return RandomPolicy(low, high, action_repeat, rng)
    if name == "brownian":
        return BrownianPolicy(low, high, brownian_dt, rng)
    raise ConfigError(f"unknown rollout policy '{name}'; valid: {', '.join(POLICIES)}")
