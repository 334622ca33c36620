"""Scoring an agent in gymnasium's own environment (never the fast copy), in parallel.

Episode i runs on env seed `seed + i`; the agent is deterministic (z = mu), so the best and
the worst episode are replayed afterwards to record their videos.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.config import EvalConfig
from worldmodels.data.atomic import atomic_write_text
from worldmodels.errors import ConfigError
from worldmodels.viz.plots import plot_histogram


def evaluate_agent(agent: str | Path, cfg: EvalConfig, out: str | Path, workers: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import load_controller
    from worldmodels.envs import get_env_module
    from worldmodels.parallel import ParallelEpisodes, init_ray
    from worldmodels.world_model import load_agent_config, load_world_model

    if cfg.episodes < 1:
        raise ConfigError("eval.episodes must be >= 1")
    agent, out = Path(agent), Path(out)
    config = load_agent_config(agent)
    init_ray(num_cpus=workers or None)
    world = load_world_model(agent, config)
    controller = load_controller(agent, world)
    flat, _ = ravel_pytree(controller)
    out.mkdir(parents=True, exist_ok=True)
    env_id = config.env.eval_id
    env_module = get_env_module(config.env.name)
    solved = float(env_module.SOLVED_SCORE)
    seeds = cfg.seed + np.arange(cfg.episodes)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.episodes, unit="ep", desc=f"evaluate on {env_id}", dynamic_ncols=True)
    start = time.perf_counter()
    try:
        episodes = ParallelEpisodes(world, workers=workers, max_task_episodes=8)
        flat_all = np.repeat(np.asarray(flat)[None], cfg.episodes, axis=0)
        result = episodes.run(flat_all, seeds, env_id, cfg.max_steps, on_task_done=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    returns, steps = result["returns"], result["steps"]
    summary = {
        "agent": str(agent), "env_id": env_id, "episodes": int(cfg.episodes), "seed": int(cfg.seed),
        "max_steps": int(cfg.max_steps),
        "mean": float(returns.mean()), "std": float(returns.std()), "min": float(returns.min()),
        "max": float(returns.max()), "median": float(np.median(returns)),
        "solved_threshold": solved, "solved": bool(returns.mean() >= solved and cfg.episodes >= 100),
        "seconds": time.perf_counter() - start, "env_steps_per_s": float(result["env_steps_per_s"]),
    }
    driving = driving_columns(result, env_module)
    summary["driving"] = {name: float(np.nanmean(values)) for name, values in driving.items()}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["episode", "seed", "return", "steps", *driving])
    for i, (s, r, n) in enumerate(zip(seeds, returns, steps, strict=True)):
        writer.writerow([i, int(s), f"{r:.3f}", int(n), *(f"{v[i]:.4f}" for v in driving.values())])
    atomic_write_text(out / "scores.csv", buffer.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    plot_histogram(out / "histogram.png", returns, f"{agent.name}: {summary['mean']:.1f} ± "
                   f"{summary['std']:.1f} over {cfg.episodes} episodes of {env_id}",
                   xlabel="episode return", marks={f"solved ({solved:g})": solved})
    if cfg.videos:
        from worldmodels.viz.images import save_video

        for name, i in (("best", int(np.argmax(returns))), ("worst", int(np.argmin(returns)))):
            replay = episodes.replay(flat_all, seeds, env_id, cfg.max_steps, episode=i)
            save_video(out / f"{name}.mp4", replay["frames"], fps=env_module.VIDEO_FPS, scale=env_module.VIDEO_SCALE)
            summary[f"{name}_episode"] = {"seed": int(seeds[i]), "return": float(returns[i]),
                                          "replayed_return": replay["return"]}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def driving_columns(result: dict[str, np.ndarray], env_module) -> dict[str, np.ndarray]:
    """How each episode was driven, for scores.csv: the mean of each action dimension, the
    share of steps with |action[0]| > 0.9, and the env's end-of-episode stats (CarRacing: the
    share of tiles visited, whether the lap was finished)."""
    names = getattr(env_module, "ACTION_NAMES", None) or [f"action{d}" for d in range(result["action_mean"].shape[1])]
    columns = {f"mean_{name}": result["action_mean"][:, d] for d, name in enumerate(names)}
    columns[f"saturated_{names[0]}"] = result["saturated"]
    columns.update({key.removeprefix("stat_"): value for key, value in result.items() if key.startswith("stat_")})
    return columns
