"""`make evaluate AGENT=<dir> EPISODES=100 SEED=0`: score an agent in env.eval_id (CarRacing-v3, VizdoomTakeCover-v1).

AGENT is a run directory (after `make train-controller`) or a shipped agent (agents/...).
Scores, a histogram and the best/worst episode videos go to --out (default: AGENT/eval for a
run, runs/eval/<name> for a shipped agent, so the repository stays clean).
Episodes are cut at the agent's own eval.max_steps (1,000 for CarRacing, 2,100 for Doom), not the
--config preset's, unless --eval.max_steps is given."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import main_wrapper, parse_stage_args


def default_out(agent: Path) -> Path:
    if (agent / "controller" / "cma_state.pkl").exists():  # a training run: keep it together
        return agent / "eval"
    return Path("runs") / "eval" / agent.resolve().name


def main(argv: Sequence[str] | None = None) -> str:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--agent", default=None, help="agent or run directory (default: --run)")
        parser.add_argument("--out", default=None, help="where scores and videos go")
        parser.add_argument("--workers", type=int, default=0, help="Ray workers (0 = all CPUs)")

    config, args = parse_stage_args(__doc__, argv, extra=extra, sections=("eval",))
    from worldmodels.data.atomic import remove_stale_temporaries
    from worldmodels.evaluate import evaluate_agent
    from worldmodels.world_model import load_agent_config

    agent = Path(args.agent or args.run)
    out = Path(args.out) if args.out else default_out(agent)
    eval_cfg = config.eval
    given = sys.argv[1:] if argv is None else list(argv)
    if not any(a.startswith("--eval.max_steps") for a in given):  # the episode cap is part of the task
        eval_cfg = dataclasses.replace(eval_cfg, max_steps=load_agent_config(agent).eval.max_steps)
    remove_stale_temporaries(out)  # left by a killed run; never read
    summary = evaluate_agent(agent, eval_cfg, out, workers=args.workers)
    print(f"evaluate: {summary['mean']:.1f} ± {summary['std']:.1f} over {summary['episodes']} episodes "
          f"of {summary['env_id']} (≤ {summary['max_steps']} steps, "
          f"seeds {summary['seed']}..{summary['seed'] + summary['episodes'] - 1}) "
          f"-> {out}")
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}))
    return str(agent) if out.parent == agent else str(out)


if __name__ == "__main__":
    main_wrapper(main, "evaluate")()
