"""Random data-collection policies. Each is seeded per episode, so an episode is
reproducible from (base seed, episode index) alone, wherever it runs."""

from __future__ import annotations

from dataclasses import dataclass

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
    Smooth, so the car drives along the track for a while instead of jittering in place.
    The walk lives in [walk_low, walk_high] (default the action box); the action taken is the
    walk clipped to the box, so a walk bound beyond the box holds that action at its limit
    for part of the time (a brake walk in [-2, 0.5] brakes on ~20 % of the steps)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, dt: float, rng: np.random.Generator,
                 walk_low=(), walk_high=()):
        self.low, self.high, self.scale, self.rng = low, high, float(np.sqrt(dt)), rng
        self.walk_low = np.asarray(walk_low, np.float32) if len(walk_low) else low
        self.walk_high = np.asarray(walk_high, np.float32) if len(walk_high) else high
        self.action = rng.uniform(self.walk_low, self.walk_high).astype(np.float32)

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        action = self.action
        step = self.scale * self.rng.standard_normal(action.shape)
        self.action = np.clip(action + step, self.walk_low, self.walk_high).astype(np.float32)
        return np.clip(action, self.low, self.high).astype(np.float32)


class SteadyPolicy:
    """The original code's "random" agent: a linear controller whose weights are drawn with a
    standard deviation s ~ U(0, 0.01) per episode, so its output y = W x + b stays within
    ~s * |x| of zero and the action is nearly the same all episode. Without a V to give it x,
    y = b + s * INPUT_NORM * noise, with b ~ N(0, s^2) and |x| ~ INPUT_NORM for C's 288 inputs.
    `original_action` maps y to the env's action as the original code did; for CarRacing
    (steer tanh, gas (tanh + 1) / 2, brake clip(tanh, 0, 1)) that is steering ~ 0, gas ~ 0.5,
    brake ~ 0: the car drives fast and nearly straight, where a Brownian walk brakes half
    the time and crawls (median speed ~ 70 against ~ 3 on FastCarRacing)."""

    MAX_STD = 0.01
    INPUT_NORM = 8.5  # sqrt(288 inputs * 0.25 mean square)

    def __init__(self, dim: int, original_action, rng: np.random.Generator):
        self.rng, self.original_action = rng, original_action
        self.std = rng.uniform(0.0, self.MAX_STD)
        self.bias = rng.normal(0.0, self.std, dim)

    def act(self, frame: np.ndarray | None = None) -> np.ndarray:
        y = self.bias + self.std * self.INPUT_NORM * self.rng.standard_normal(self.bias.shape)
        return np.asarray(self.original_action(y), np.float32)


POLICIES = ("random", "brownian", "steady")


@dataclass(frozen=True)
class PolicySpec:
    """One random policy of a rollouts folder: its name and, for 'brownian', the walk's bounds
    (empty: the action box)."""

    name: str
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @property
    def label(self) -> str:
        """How episodes record it (their `policy` field), e.g. 'brownian low=-1/0/-2 high=1/1/0.5'."""
        bounds = [f"{key}={'/'.join(f'{v:g}' for v in values)}"
                  for key, values in (("low", self.low), ("high", self.high)) if values]
        return " ".join([self.name, *bounds])


def parse_mix_entry(entry: str) -> tuple[int, PolicySpec]:
    """'COUNT POLICY [low=a/b/c] [high=a/b/c]' -> (COUNT, spec); a `ConfigError` names a bad one."""
    words = entry.split()
    usage = ("each rollouts.mix entry is 'COUNT POLICY [low=a/b/c] [high=a/b/c]', "
             "e.g. '4 brownian high=1/0.3/0.5'")
    if len(words) < 2 or not words[0].isdigit() or int(words[0]) < 1:
        raise ConfigError(f"rollouts.mix entry '{entry}': {usage}")
    bounds: dict[str, tuple[float, ...]] = {}
    for word in words[2:]:
        key, _, values = word.partition("=")
        try:
            if key not in ("low", "high") or key in bounds:
                raise ValueError(word)
            bounds[key] = tuple(float(v) for v in values.split("/"))
        except ValueError:
            raise ConfigError(f"rollouts.mix entry '{entry}': cannot read '{word}'; {usage}") from None
    return int(words[0]), PolicySpec(words[1], bounds.get("low", ()), bounds.get("high", ()))


def episode_policy(policy: str, low: tuple[float, ...], high: tuple[float, ...], mix: tuple[str, ...],
                   index: int) -> PolicySpec:
    """The policy of episode `index`: `policy` (walk bounds `low`/`high`) without a mix; with one,
    the folder cycles through the entries, COUNT episodes of each per cycle, so the policy
    depends on the index alone and every prefix of the folder holds the same mix."""
    if not mix:
        return PolicySpec(policy, tuple(low), tuple(high))
    entries = [parse_mix_entry(entry) for entry in mix]
    position = index % sum(count for count, _ in entries)
    for count, spec in entries:
        if position < count:
            return spec
        position -= count
    raise AssertionError("unreachable")


def make_random_policy(name: str, low: np.ndarray, high: np.ndarray, *, action_repeat: int,
                       brownian_dt: float, rng: np.random.Generator, original_action=None,
                       walk_low=(), walk_high=()):
    """`original_action` (y -> action, numpy) is the env's mapping of a controller output as
    the original code made it; only 'steady' uses it. `walk_low` / `walk_high` (empty: the
    box) bound the 'brownian' walk."""
    if name == "random":
        return RandomPolicy(low, high, action_repeat, rng)
    if name == "brownian":
        return BrownianPolicy(low, high, brownian_dt, rng, walk_low, walk_high)
    if name == "steady":
        if original_action is None:
            raise ConfigError("rollouts.policy 'steady' needs the env module's original_action; "
                              "this env has none: use 'random' or 'brownian'")
        return SteadyPolicy(len(low), original_action, rng)
    raise ConfigError(f"unknown rollout policy '{name}'; valid: {', '.join(POLICIES)}")
