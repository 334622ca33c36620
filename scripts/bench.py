"""`make bench`: one line per figure, `name value unit`, on stdout.

Ratios are measured side by side in one run (this machine is shared and noisy): the two
things compared alternate in blocks and their times are summed.

    python -m scripts.bench                # every group
    python -m scripts.bench --only env     # some groups: env, rollout
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np

Figure = tuple[str, float, str]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _unpin(cores: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)


def env_step_rates(ids: tuple[str, ...], rounds: int = 6, steps_per_round: int = 250,
                   seed: int = 0) -> dict[str, float]:
    """Steps/s of each env id on one core, alternating rounds between them.

    Every env sees the same seed and the same smooth random actions, so they do the same
    physics and draw the same frames."""
    import gymnasium

    import worldmodels  # noqa: F401

    envs = {i: gymnasium.make(i) for i in ids}
    rng = np.random.default_rng(seed)
    actions = np.clip(np.cumsum(rng.normal(0, 0.15, (rounds * steps_per_round, 3)), axis=0), -1, 1)
    actions[:, 1:] = np.abs(actions[:, 1:]) * np.array([1.0, 0.2])
    actions = actions.astype(np.float32)
    elapsed = dict.fromkeys(ids, 0.0)
    for env in envs.values():
        env.reset(seed=seed)
    for r in range(rounds):
        for env_id, env in envs.items():
            block = actions[r * steps_per_round:(r + 1) * steps_per_round]
            start = time.perf_counter()
            for a in block:
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset(seed=seed + r + 1)
            elapsed[env_id] += time.perf_counter() - start
    for env in envs.values():
        env.close()
    return {i: rounds * steps_per_round / elapsed[i] for i in ids}


def bench_env() -> Iterator[Figure]:
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    _pin_to_one_core()
    try:
        rates = env_step_rates(("CarRacing-v3", "FastCarRacing-v3"))
    finally:
        _unpin(cores)
    yield "env_steps_per_s_gymnasium", rates["CarRacing-v3"], "steps/s"
    yield "env_steps_per_s_fast", rates["FastCarRacing-v3"], "steps/s"
    yield "env_speedup", rates["FastCarRacing-v3"] / rates["CarRacing-v3"], "x"


def bench_rollout(episodes: int = 12, max_steps: int = 250) -> Iterator[Figure]:
    """Episodes/s of the rollouts stage with every local core vs with one worker."""
    from dataclasses import replace

    from worldmodels.config import get_config
    from worldmodels.parallel import init_ray
    from worldmodels.rollout.collect import collect_rollouts

    cpus = os.cpu_count() or 1
    init_ray(num_cpus=cpus)
    config = get_config("tiny")
    config = replace(config, rollouts=replace(config.rollouts, episodes=episodes,
                                              max_steps=max_steps, workers=0))
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = replace(config, rollouts=replace(config.rollouts, episodes=cpus, seed=10_000))
        collect_rollouts(warm, os.path.join(tmp, "warm"), workers=cpus, progress=False)
        for workers in (1, cpus):
            summary = collect_rollouts(config, os.path.join(tmp, f"w{workers}"),
                                       workers=workers, progress=False)
            rates[workers] = summary.episodes_per_s
            log(f"rollouts with {workers} worker(s): {summary.episodes_per_s:.2f} episodes/s, "
                f"{summary.steps_per_s:.0f} steps/s")
    yield "rollout_episodes_per_s_1_worker", rates[1], "episodes/s"
    yield f"rollout_episodes_per_s_{cpus}_workers", rates[cpus], "episodes/s"
    yield "rollout_scaling", rates[cpus] / rates[1], "x"


GROUPS: dict[str, Callable[[], Iterator[Figure]]] = {
    "env": bench_env,
    "rollout": bench_rollout,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups among: {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    chosen = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        sys.exit(f"error: unknown bench group(s) {unknown}; valid: {', '.join(GROUPS)}")
    for group in chosen:
        log(f"{group} ...")
        for name, value, unit in GROUPS[group]():
            print(f"{name} {value:.4g} {unit}", flush=True)


if __name__ == "__main__":
    main()
