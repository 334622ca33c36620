"""Stage 1: random-policy episodes in the real environment, in parallel with Ray; also the
agent-played episodes of `make iterate` (the same machinery with an `agent` spec).

Each episode is one Ray task that returns the compressed bytes of its .npz; the driver
alone writes files (atomically), so workers on other nodes need no shared storage and a
killed worker's task is simply retried. Episode i is fully determined by (seed, i).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodels.config import Config, EnvConfig, RolloutConfig
from worldmodels.data.atomic import atomic_write_bytes, remove_stale_temporaries
from worldmodels.data.episodes import (
    check_episode_file,
    episode_arrays,
    episode_bytes,
    episode_index,
    episode_name,
    list_episodes,
)
from worldmodels.envs import get_env_module
from worldmodels.errors import ConfigError, WorldModelsError
from worldmodels.rollout.policies import POLICIES, PolicySpec, episode_policy, make_random_policy, parse_mix_entry


def run_random_episode(env_cfg: EnvConfig, cfg: RolloutConfig, index: int,
                       agent: dict | None = None) -> dict[str, np.ndarray]:
    """Play episode `index` with the random policy, or with `agent` (`agent_spec`: an agent
    that takes the random policy's action with probability agent["explore"]); returns the
    episode's arrays."""
    module = get_env_module(env_cfg.name)
    env = module.make_env(env_cfg.train_id)
    try:
        seed = cfg.seed + index
        rng = np.random.default_rng([cfg.seed, index])
        space = env.action_space
        spec = episode_policy(cfg.policy, cfg.brownian_low, cfg.brownian_high, cfg.mix, index)
        policy = make_random_policy(spec.name, space.low, space.high, action_repeat=cfg.action_repeat,
                                    brownian_dt=cfg.brownian_dt, rng=rng,
                                    original_action=getattr(module, "original_action", None),
                                    walk_low=spec.low, walk_high=spec.high)
        if agent is not None:
            from worldmodels.rollout.agent import agent_policy

            controller = (agent["alternate"] if "alternate" in agent
                          and plays_alternate(index, agent["alternate_share"]) else agent["controller"])
            policy = agent_policy(agent["world_id"], agent["payload"], controller, policy,
                                  agent["explore"], rng)
        obs, _ = env.reset(seed=seed)
        frames, actions, rewards, terms, truncs = [], [], [], [], []
        for t in range(cfg.max_steps):
            frame = module.preprocess_frame(obs, env_cfg.frame_size)
            action = module.rollout_action(policy.act(frame))  # Doom: quantised to -1 / 0 / +1
            obs, reward, terminated, truncated, _ = env.step(action)
            truncated = truncated or (t == cfg.max_steps - 1 and not terminated)
            frames.append(frame)
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            truncs.append(truncated)
            if terminated or truncated:
                break
    finally:
        env.close()
    return episode_arrays(frames, actions, rewards, terms, truncs, env_id=env_cfg.train_id, seed=seed,
                          policy="agent" if agent is not None else spec.label)


def agent_spec(world, controller: np.ndarray, explore: float, alternate: np.ndarray | None = None,
               alternate_share: float = 0.0) -> dict:
    """What a worker needs to play an agent: V and M (plain arrays), C's flat parameters and
    the share of steps whose action comes from the random policy instead; optionally a second
    C (`alternate`) that plays a share `alternate_share` of the episodes (`plays_alternate`)."""
    from worldmodels.parallel import world_id

    spec = {"world_id": world_id(world), "payload": world.payload(),
            "controller": np.asarray(controller, np.float32), "explore": float(explore)}
    if alternate is not None and alternate_share > 0:
        spec.update(alternate=np.asarray(alternate, np.float32), alternate_share=float(alternate_share))
    return spec


def plays_alternate(index: int, share: float) -> bool:
    """Whether episode `index` is one of the share `share` played by the alternate C: spread
    evenly over the indices (share 0.25: episodes 3, 7, 11, ...), so any prefix holds its share."""
    return math.floor((index + 1) * share) > math.floor(index * share)


def _episode_task(env_cfg: EnvConfig, cfg: RolloutConfig, index: int,
                  agent: dict | None = None) -> tuple[int, int, bytes]:
    arrays = run_random_episode(env_cfg, cfg, index, agent)
    return index, len(arrays["reward"]), episode_bytes(arrays)


class EpisodeWorker:
    """A Ray actor body: plays the episodes it is handed, one after another."""

    def ready(self) -> bool:
        return True

    def run(self, env_cfg: EnvConfig, cfg: RolloutConfig, index: int,
            agent: dict | None = None) -> tuple[int, int, bytes]:
        return _episode_task(env_cfg, cfg, index, agent)


@dataclass
class RolloutSummary:
    written: int
    skipped: int
    steps: int
    seconds: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / max(self.seconds, 1e-9)

    @property
    def episodes_per_s(self) -> float:
        return self.written / max(self.seconds, 1e-9)


def validate_rollout_config(config: Config) -> None:
    """Refuse values that would only fail inside a worker, before any work starts."""
    module = get_env_module(config.env.name)
    cfg = config.rollouts
    if cfg.mix:
        for entry in cfg.mix:
            _validate_policy(f"rollouts.mix entry '{entry}'", ("low", "high"), parse_mix_entry(entry)[1],
                             module, config.env.name)
    else:
        _validate_policy("rollouts", ("brownian_low", "brownian_high"),
                         PolicySpec(cfg.policy, cfg.brownian_low, cfg.brownian_high), module, config.env.name)
    if cfg.episodes < 0 or cfg.max_steps < 1 or cfg.workers < 0:
        raise ConfigError("rollouts.episodes and rollouts.workers must be >= 0 and "
                          "rollouts.max_steps >= 1")


def _validate_policy(where: str, bound_names: tuple[str, str], spec: PolicySpec, module, env_name: str) -> None:
    """`where` names the setting in errors; `bound_names` its walk bounds' fields."""
    if spec.name not in POLICIES:
        raise ConfigError(f"{where}: unknown rollout policy '{spec.name}'; valid: {', '.join(POLICIES)}")
    if spec.name == "steady" and not hasattr(module, "original_action"):
        raise ConfigError(f"{where}: policy 'steady' is not defined for env '{env_name}' "
                          "(it has no original_action); use 'random' or 'brownian'")
    if spec.name != "brownian" and (spec.low or spec.high):
        raise ConfigError(f"{where}: {bound_names[0]}/{bound_names[1]} bound a 'brownian' walk; "
                          f"policy '{spec.name}' has none (drop them or use 'brownian')")
    dim = module.ACTION_DIM
    for name, bound in zip(bound_names, (spec.low, spec.high), strict=True):
        if bound and len(bound) != dim:
            raise ConfigError(f"{where}: {name} has {len(bound)} values; env '{env_name}' "
                              f"has {dim} action dimensions (give one bound each)")
    if spec.low and spec.high and not all(lo < hi for lo, hi in zip(spec.low, spec.high, strict=True)):
        raise ConfigError(f"{where}: {bound_names[0]} must be below {bound_names[1]} in every dimension")


def pending_episodes(folder: Path, episodes: int) -> tuple[list[int], int]:
    """Indices still to collect, and how many finished episodes are already there.
    A corrupt or truncated finished episode raises `DataError` (nothing is overwritten)."""
    remove_stale_temporaries(folder)
    done = set()
    for path in list_episodes(folder):
        check_episode_file(path)
        done.add(episode_index(path))
    todo = [i for i in range(episodes) if i not in done]
    return todo, len(done & set(range(episodes)))


def collect_rollouts(config: Config, folder: str | Path, *, workers: int | None = None,
                     progress: bool = True, agent: dict | None = None) -> RolloutSummary:
    """Collect the missing episodes of `config.rollouts` into `folder`, in parallel.

    `workers` (default: `config.rollouts.workers`, 0 = every CPU Ray offers) bounds the
    episodes in flight; `agent` (`agent_spec`) plays them instead of the random policy.
    Returns counts and throughput of this call.
    """
    from worldmodels.parallel import cluster_cpus, init_ray

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = config.rollouts
    validate_rollout_config(config)
    todo, skipped = pending_episodes(folder, cfg.episodes)
    if not todo:
        return RolloutSummary(written=0, skipped=skipped, steps=0, seconds=0.0)

    workers = cfg.workers if workers is None else workers
    ray = init_ray(num_cpus=workers or None)
    parallel = workers or cluster_cpus()
    # One actor per worker, each holding one CPU and a queue of up to two episodes: a worker
    # starts its next episode the moment it finishes one (no idle gap while the driver reacts),
    # and never runs two at once. A dead actor is restarted and its queued episodes rerun.
    actor_class = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=3)(EpisodeWorker)
    actors = [actor_class.remote() for _ in range(parallel)]
    ray.get([actor.ready.remote() for actor in actors])
    agent_ref = ray.put(agent) if agent is not None else None  # V and M travel once per node
    load = [0] * parallel
    owner: dict = {}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, initial=skipped, unit="ep", dynamic_ncols=True,
                   desc="agent rollouts" if agent else "rollouts")
    start, steps, written = time.perf_counter(), 0, 0
    queue, in_flight, writes = list(todo), [], []
    # Files are written (and fsynced) by a helper thread, so the loop hands the next episode
    # to the freed worker at once instead of leaving it idle during the disk write.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
    try:
        while queue or in_flight:
            for a, actor in enumerate(actors):
                while queue and load[a] < 2:
                    ref = actor.run.remote(config.env, cfg, queue.pop(0), agent_ref)
                    owner[ref], load[a] = a, load[a] + 1
                    in_flight.append(ref)
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            load[owner.pop(ready[0])] -= 1
            try:
                index, length, data = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, WorldModelsError):
                    raise exc.cause from None
                raise
            writes.append(writer.submit(atomic_write_bytes, folder / episode_name(index), data))
            del data
            steps += length
            written += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
        for write in writes:
            write.result()  # surface a failed write
    finally:
        writer.shutdown(wait=True)
        if bar is not None:
            bar.close()
        for actor in actors:
            ray.kill(actor)
    return RolloutSummary(written=written, skipped=skipped, steps=steps,
                          seconds=time.perf_counter() - start)
