"""`make rollouts`: random-policy episodes into RUN/rollouts, in parallel with Ray."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args
from worldmodels.rollout.collect import collect_rollouts
from worldmodels.run_dir import prepare_stage_dir


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, sections=("env", "rollouts"))
    folder = prepare_stage_dir(args.run, "rollouts", config, sections=("env", "rollouts"),
                               free_fields=("rollouts.episodes", "rollouts.workers"))
    summary = collect_rollouts(config, folder)
    print(f"rollouts: {summary.written} written, {summary.skipped} already there, "
          f"{summary.steps} steps at {summary.steps_per_s:.0f} steps/s -> {folder}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "rollouts")()
