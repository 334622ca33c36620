"""RUN/report.md: what ran, how long it took, what it scored, with the pictures."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from worldmodels.data.atomic import atomic_write_text
from worldmodels.data.episodes import list_episodes

STAGES = ("rollouts", "train-vae", "series", "train-rnn", "train-controller", "evaluate", "temperature-sweep",
          "iterate")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _picture(run: Path, rel: str, alt: str) -> str:
    return f"![{alt}]({rel})\n" if (run / rel).exists() else ""


def write_report(run: str | Path) -> Path:
    run = Path(run)
    timings = _json(run / "timings.json")
    config = _json(run / "controller" / "config.json") or _json(run / "vision" / "config.json") \
        or _json(run / "rollouts" / "config.json")
    lines = [f"# World Models run: `{run}`", ""]
    lines += [f"Preset `{config.get('preset', '?')}` on {platform.machine()} with "
              f"{os.cpu_count()} CPU cores; report written {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    total = 0.0
    lines += ["| stage | wall time (s) | runs |", "|---|---|---|"]
    for stage in STAGES:
        entries = timings.get(stage, [])
        seconds = sum(e["seconds"] for e in entries)
        total += seconds
        if entries:
            lines.append(f"| {stage} | {seconds:.0f} | {len(entries)} |")
    lines += [f"| **all** | **{total:.0f}** ({total / 60:.1f} min) | |", ""]

    episodes = list_episodes(run / "rollouts")
    if episodes:
        r = config.get("rollouts", {})
        policy = (f"`{r.get('policy')}` policy" if not r.get("mix") else
                  "policies " + ", ".join(f"`{entry}`" for entry in r["mix"]) + " in turn (COUNT POLICY)")
        lines += ["## 1. Rollouts", "",
                  f"{len(episodes)} episodes of `{config.get('env', {}).get('train_id')}` with the "
                  f"{policy}, at most {r.get('max_steps')} steps each.", ""]
    v = _json(run / "vision" / "summary.json")
    if v:
        lines += ["## 2. V (vision)", "",
                  f"{v.get('steps')} train steps; held-out reconstruction error "
                  f"{v.get('heldout_mse_per_pixel', float('nan')):.5f} per pixel "
                  f"({v.get('heldout_sse_per_image', float('nan')):.1f} summed per image, "
                  f"{v.get('heldout_frames')} frames).", "",
                  "Held-out frames (top) and their reconstructions (bottom):", "",
                  _picture(run, "vision/reconstructions.png", "reconstructions"),
                  "Traversals of the most active latent dimensions:", "",
                  _picture(run, "vision/traversals.png", "traversals"),
                  _picture(run, "vision/curves.png", "V curves")]
    m = _json(run / "mdnrnn" / "summary.json")
    if m:
        lines += ["## 3. M (MDN-RNN)", "", "| held-out check | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in m.items() if k.startswith("heldout")]
        lines += ["", "A recorded episode, V's reconstruction, and M's open-loop dream under the same "
                  "actions (video: `mdnrnn/dream.mp4`):", "",
                  _picture(run, "mdnrnn/dream_strip.png", "dream"),
                  _picture(run, "mdnrnn/reward.png", "reward head"),
                  _picture(run, "mdnrnn/curves.png", "M curves")]
    c = _json(run / "controller" / "summary.json")
    if c:
        mode = "in M's dream" if c.get("dream") else "in the real environment"
        lines += ["## 4. C (controller)", "",
                  f"{c.get('parameters')} parameters evolved with CMA-ES {mode} for {c.get('generations')} "
                  f"generations; best population fitness {_fmt(c.get('best_fitness'))}, best "
                  f"{c.get('checks', 'real')}-env check {_fmt(c.get('best_check', c.get('best_real_check')))} "
                  f"(generation {c.get('best_check_generation', c.get('best_real_check_generation'))}).",
                  "", _picture(run, "controller/curves.png", "C curves")]
    e = _json(run / "eval" / "summary.json")
    if e:
        lines += ["## 5. Evaluation", "",
                  f"**{e['mean']:.1f} ± {e['std']:.1f}** over {e['episodes']} episodes of `{e['env_id']}` "
                  f"(seeds {e['seed']}..{e['seed'] + e['episodes'] - 1}; min {e['min']:.1f}, max {e['max']:.1f}). "
                  "Videos: `eval/best.mp4`, `eval/worst.mp4`.", "",
                  _picture(run, "eval/histogram.png", "scores")]
    if (run / "temperature_sweep" / "table.md").exists():
        lines += ["## 6. Temperature sweep", "", (run / "temperature_sweep" / "table.md").read_text(),
                  _picture(run, "temperature_sweep/temperatures.png", "temperature sweep")]
    rounds = run / "iterate.csv"
    if rounds.exists():
        from worldmodels.viz.plots import read_csv

        lines += ["## 7. Iterative rounds (`make iterate`)", "",
                  "Each round: the previous agent plays (exploring), M retrains on all data, C evolves "
                  "again; scored on the same real episodes as section 5.", "",
                  "| round | agent episodes | their mean length | M's train episodes | C's kept check | "
                  "real score |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['episodes']} | {r['agent_episode_mean_steps']} | {r['train_episodes_m']} "
                  f"| {r['c_kept_check']} | **{r['eval_mean']} ± {r['eval_std']}** ({r['eval_episodes']} episodes) |"
                  for r in read_csv(rounds)]
        lines.append("")
    path = run / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
