"""The paper's Doom table: C trained in M's dream at each temperature tau, then scored in the
dream and in the real game (SEEDS.md section 2).

For each tau, RUN/temperature_sweep/tau_<tau>/ is a complete agent directory: config.json (the
run's config with controller.temperature = tau and controller.dream on), links to RUN's
vision/, mdnrnn/ and series/, its own controller/ (a full, resumable `train_controller`),
dream.json (dream returns of its best.msgpack at tau on fresh fixed keys) and eval/
(`evaluate_agent` on env.eval_id, seeds eval.seed + i), so `make evaluate AGENT=<that dir>`
works on it too. The tau equal to the run's own controller.temperature reuses RUN/controller
when that search is finished with the same controller settings (and RUN/eval when it scored
the same episodes), instead of running the same search twice. results.json, table.md and
temperatures.png sum the sweep up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.config import Config
from worldmodels.data.atomic import atomic_write_text
from worldmodels.errors import ConfigError

DREAM_SCORE_SEED = 3_000_000  # keys of the sweep's dream scores: not those best.msgpack was picked on
SHARED_PARTS = ("vision", "mdnrnn", "series")
# Ha & Schmidhuber (2018), DoomTakeCover: tau -> (dream mean, std, real mean, std), for reference.
PAPER = {0.1: (2086, 140, 193, 58), 0.5: (2060, 277, 196, 50), 1.0: (1145, 690, 868, 511),
         1.15: (918, 546, 1092, 556), 1.3: (732, 269, 753, 139)}


def tau_name(tau: float) -> str:
    return f"tau_{tau:g}"


def tau_config(config: Config, tau: float) -> Config:
    """The run's config with C trained in the dream at `tau`, scored on the sweep's episodes."""
    return replace(config, controller=replace(config.controller, temperature=float(tau), dream=True),
                   eval=replace(config.eval, episodes=config.sweep.real_episodes, videos=False))


def _link(target: Path, link: Path) -> None:
    if not link.is_symlink() and not link.exists():
        os.symlink(os.path.relpath(target, link.parent), link)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _reusable_controller(run: Path, config: Config) -> bool:
    """RUN/controller is a finished search with exactly these controller settings."""
    saved, summary = _read_json(run / "controller" / "config.json"), _read_json(run / "controller" / "summary.json")
    if not saved or not summary or not (run / "controller" / "best.msgpack").exists():
        return False
    try:
        controller = Config.from_dict(saved).controller
    except Exception:  # written by another version: train afresh
        return False
    same = replace(controller, workers=config.controller.workers,
                   episode_timeout=config.controller.episode_timeout) == config.controller
    return same and summary.get("generations") == config.controller.generations


def _reusable_eval(run: Path, config: Config) -> bool:
    summary = _read_json(run / "eval" / "summary.json")
    return (summary.get("episodes") == config.eval.episodes and summary.get("seed") == config.eval.seed
            and summary.get("env_id") == config.env.eval_id
            and (run / "eval" / "summary.json").stat().st_mtime
            > (run / "controller" / "best.msgpack").stat().st_mtime)


def prepare_tau_dir(run: Path, folder: Path, config: Config) -> bool:
    """Make `folder` an agent directory for `config`; True when it reuses RUN's controller."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in SHARED_PARTS:
        _link(run / part, folder / part)
    reuse = (folder / "controller").is_symlink() or (
        not (folder / "controller").exists() and _reusable_controller(run, config))
    if reuse:
        _link(run / "controller", folder / "controller")
        if _reusable_eval(run, config):
            _link(run / "eval", folder / "eval")
    atomic_write_text(folder / "config.json", config.to_json())
    return reuse


def score_in_dream(folder: Path, config: Config, episodes: int) -> np.ndarray:
    """Dream returns (episodes,) of folder's best.msgpack at config.controller.temperature."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import load_controller
    from worldmodels.train.es import DreamScorer
    from worldmodels.world_model import load_world_model

    world = load_world_model(folder, config)
    flat, _ = ravel_pytree(load_controller(folder, world))
    scorer = DreamScorer(world, config, folder / "series")
    return scorer.returns(np.asarray(flat)[None], episodes, seed=DREAM_SCORE_SEED, what="sweep.dream_episodes")[0]


def run_temperature_sweep(config: Config, run: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and score C at every tau of config.sweep.temperatures into RUN/temperature_sweep."""
    from worldmodels.evaluate import evaluate_agent
    from worldmodels.run_dir import FREE_FIELDS, prepare_stage_dir
    from worldmodels.train.es import train_controller

    cfg = config.sweep
    if not cfg.temperatures:
        return {"rows": []}
    if cfg.dream_episodes < 1 or cfg.real_episodes < 1:
        raise ConfigError("sweep.dream_episodes and sweep.real_episodes must be >= 1")
    run = Path(run)
    out = run / "temperature_sweep"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for tau in cfg.temperatures:
        tc = tau_config(config, tau)
        folder = out / tau_name(tau)
        reused = prepare_tau_dir(run, folder, tc)
        t0 = time.perf_counter()
        if not reused:
            prepare_stage_dir(folder, "controller", tc, sections=("controller",), free_fields=FREE_FIELDS["controller"])
            if progress:
                print(f"temperature sweep: tau = {tau:g}", flush=True)
            train_controller(tc, folder, progress=progress)
        train_seconds = time.perf_counter() - t0
        dream_path = folder / "dream.json"
        dream = _read_json(dream_path)
        best_mtime = (folder / "controller" / "best.msgpack").stat().st_mtime
        if dream.get("episodes") != cfg.dream_episodes or dream.get("controller_mtime") != best_mtime:
            returns = score_in_dream(folder, tc, cfg.dream_episodes)
            dream = {"episodes": cfg.dream_episodes, "temperature": tau, "mean": float(returns.mean()),
                     "std": float(returns.std()), "returns": returns.tolist(), "controller_mtime": best_mtime}
            atomic_write_text(dream_path, json.dumps(dream, indent=2))
        t1 = time.perf_counter()
        real = _read_json(folder / "eval" / "summary.json")
        if not (real.get("episodes") == cfg.real_episodes and real.get("seed") == tc.eval.seed
                and (folder / "eval" / "summary.json").stat().st_mtime > best_mtime):
            real = evaluate_agent(folder, tc.eval, folder / "eval", workers=config.controller.workers,
                                  progress=progress)
        rows.append({"temperature": tau, "dream_mean": dream["mean"], "dream_std": dream["std"],
                     "real_mean": real["mean"], "real_std": real["std"], "reused_run_controller": reused,
                     "controller_seconds_this_run": round(train_seconds, 1),
                     "score_seconds_this_run": round(time.perf_counter() - t1, 1)})
        if progress:
            print(f"tau {tau:g}: dream {dream['mean']:.1f} ± {dream['std']:.1f}, real {real['mean']:.1f} ± "
                  f"{real['std']:.1f}", flush=True)
    result = {"env_id": config.env.eval_id, "dream_episodes": cfg.dream_episodes,
              "real_episodes": cfg.real_episodes, "generations": config.controller.generations, "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(out / "table.md", sweep_table(result))
    plot_sweep(out / "temperatures.png", result)
    return result


def sweep_table(result: dict[str, Any]) -> str:
    lines = [f"C trained only in M's dream at each tau ({result['generations']} generations); dream: "
             f"{result['dream_episodes']} dreamed episodes at that tau; real: {result['real_episodes']} "
             f"episodes of {result['env_id']}. Paper: Ha & Schmidhuber (2018), 100 trials each.", "",
             "| tau | dream score | real score | paper dream | paper real |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        paper = PAPER.get(round(r["temperature"], 2))
        pd, pr = (f"{paper[0]} ± {paper[1]}", f"{paper[2]} ± {paper[3]}") if paper else ("", "")
        lines.append(f"| {r['temperature']:g} | {r['dream_mean']:.0f} ± {r['dream_std']:.0f} | "
                     f"{r['real_mean']:.0f} ± {r['real_std']:.0f} | {pd} | {pr} |")
    return "\n".join(lines) + "\n"


def plot_sweep(path: Path, result: dict[str, Any]) -> None:
    from worldmodels.viz.plots import _figure, save_figure

    plt = _figure()
    rows = result["rows"]
    taus = np.array([r["temperature"] for r in rows])
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, color in (("dream", "dream score", "tab:purple"), ("real", "real score", "tab:green")):
        ax.errorbar(taus, [r[f"{key}_mean"] for r in rows], yerr=[r[f"{key}_std"] for r in rows], marker="o",
                    capsize=4, color=color, label=f"{label} (this run)")
        paper = [(t, PAPER[round(t, 2)]) for t in taus if round(t, 2) in PAPER]
        if paper:
            i = 0 if key == "dream" else 2
            ax.plot([t for t, _ in paper], [p[i] for _, p in paper], ls=":", marker="x", color=color, alpha=0.6,
                    label=f"{label} (paper)")
    ax.set_xlabel("temperature tau of the dream C was trained in")
    ax.set_ylabel("frames survived")
    ax.set_title(f"DoomTakeCover: dream vs real ({result['env_id']})", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
