"""Which M's dream predicts the real game? Scores each controller run in each M's dream (the
controller's own M reading the dreamed frames, as `controller.dream_worlds` does) and prints
a table and, per M, the correlation of the dream scores with the runs' real scores
(the mean of RUN/eval and RUN/eval-seed1000 where present; a run with neither is ranked by
the dreams alone, its real score shown as nan).

    .venv/bin/python scripts/dream_matrix.py --runs runs/a runs/b ... --worlds runs/x runs/y ... \
        [--episodes 100] [--temperature 1.15] [--out matrix.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def real_score(run: Path) -> float:
    """The run's real score, NaN when it has none yet (the dream alone then ranks it)."""
    scores = [json.loads((run / d / "summary.json").read_text())["mean"]
              for d in ("eval", "eval-seed1000") if (run / d / "summary.json").exists()]
    return float(np.mean(scores)) if scores else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="controller runs (eval/ gives the real score)")
    parser.add_argument("--worlds", nargs="+", required=True, help="Ms to dream in (mdnrnn/ folders or runs)")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.15)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import load_controller
    from worldmodels.config import apply_override
    from worldmodels.train.es import DreamScorer
    from worldmodels.world_model import load_agent_config, load_world_model

    rows = []
    for run in map(Path, args.runs):
        row = {"run": str(run), "real": real_score(run)}
        config = apply_override(load_agent_config(run), "controller.temperature", str(args.temperature))
        world = load_world_model(run, config)
        flat, _ = ravel_pytree(load_controller(run, world))
        # Every world at once: one compiled call, the episodes in world-sized blocks.
        n = str(len(args.worlds))  # the run's own rollout and check counts play no part here
        for key, value in (("controller.dream_worlds", ",".join(args.worlds)), ("controller.rollouts", n),
                           ("controller.eval_episodes", n)):
            config = apply_override(config, key, value)
        scorer = DreamScorer(world, config, run / "series")
        totals = scorer.returns(np.asarray(flat)[None], args.episodes * len(args.worlds), seed=123, what="--episodes")
        row.update(zip(args.worlds, totals[0].reshape(len(args.worlds), -1).mean(axis=1).tolist(), strict=True))
        rows.append(row)
        print(" | ".join([row["run"], f"{row['real']:.0f}", *(f"{row[m]:.0f}" for m in args.worlds)]), flush=True)
    real = np.array([r["real"] for r in rows])
    scored = ~np.isnan(real)  # runs not yet played in the game take no part in the correlation
    rank = lambda a: np.argsort(np.argsort(a))
    for m in args.worlds:
        dream = np.array([r[m] for r in rows])
        line = f"{m}: dream mean {dream.mean():.0f}"
        dream, real_ = dream[scored], real[scored]
        if len(real_) >= 3:  # a correlation needs a few runs
            line += (f", correlation with real ({len(real_)} runs): Pearson {np.corrcoef(dream, real_)[0, 1]:+.2f}, "
                     f"Spearman {np.corrcoef(rank(dream), rank(real_))[0, 1]:+.2f}")
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
