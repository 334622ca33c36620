"""`make temperature-sweep`: train C in M's dream at each tau of sweep.temperatures and score it in
the dream and in the real env (the paper's Doom table): RUN/temperature_sweep/{table.md,
temperatures.png, results.json}. Needs RUN's series and M; a preset without temperatures
(every CarRacing one) makes this a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import main_wrapper, parse_stage_args


def main(argv: Sequence[str] | None = None) -> str | None:
    config, args = parse_stage_args(__doc__, argv, sections=("sweep", "controller"))
    from worldmodels.train.temperature_sweep import run_temperature_sweep

    result = run_temperature_sweep(config, args.run)
    if not result["rows"]:
        print(f"temperature-sweep: preset '{config.preset}' sets no sweep.temperatures; nothing to do")
        return None
    print((Path(args.run) / "temperature_sweep" / "table.md").read_text())
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "temperature-sweep")()
