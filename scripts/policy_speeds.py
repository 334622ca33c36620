"""What driving does each random rollout policy show M? Plays FastCarRacing with each policy
and prints the car's speed (read from the physics), the share of rewarded steps, the episode
length and the share of steps driven fast while steering: the README's rollout-policy table.

    .venv/bin/python scripts/policy_speeds.py [--episodes 8] [--max-steps 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from worldmodels.envs import carracing
from worldmodels.rollout.policies import make_random_policy

POLICIES = {
    "brownian": {},
    "brownian, gas <= 0.3, brake walk [-2, 0.5]": {"walk_low": (-1, 0, -2), "walk_high": (1, 0.3, 0.5)},
    "steady": {},
}


def measure(name: str, kwargs: dict, episodes: int, max_steps: int) -> dict[str, float]:
    speed, steer, rewarded, lengths = [], [], [], []
    for i in range(episodes):
        env = carracing.make_env("FastCarRacing-v3")
        policy = make_random_policy(name, env.action_space.low, env.action_space.high, action_repeat=5,
                                    brownian_dt=0.02, rng=np.random.default_rng([0, i]),
                                    original_action=carracing.original_action, **kwargs)
        env.reset(seed=i)
        steps = 0
        while steps < max_steps:
            steps += 1
            action = policy.act()
            _, reward, terminated, truncated, _ = env.step(action)
            speed.append(float(np.hypot(*env.unwrapped.car.hull.linearVelocity)))
            steer.append(abs(float(action[0])))
            rewarded.append(reward > 0)
            if terminated or truncated:
                break
        lengths.append(steps)
        env.close()
    speed, steer = np.array(speed), np.array(steer)
    return {"median_speed": float(np.median(speed)), "speed_p10": float(np.percentile(speed, 10)),
            "speed_p90": float(np.percentile(speed, 90)), "rewarded": float(np.mean(rewarded)),
            "length": float(np.mean(lengths)), "fast_steering": float(np.mean((speed > 30) & (steer > 0.3)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args()
    print("| policy | median speed (10th-90th pct.) | steps rewarded | episode length "
          "| fast (> 30) and steering (|steer| > 0.3) |")
    print("|---|---|---|---|---|")
    for label, kwargs in POLICIES.items():
        m = measure(label.split(",")[0], kwargs, args.episodes, args.max_steps)
        print(f"| {label} | {m['median_speed']:.1f} ({m['speed_p10']:.0f}-{m['speed_p90']:.0f}) | "
              f"{100 * m['rewarded']:.1f} % | {m['length']:.0f} | {100 * m['fast_steering']:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
