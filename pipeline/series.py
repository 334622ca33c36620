"""`make series`: encode every episode of RUN/rollouts with V into RUN/series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import configure_host_devices, main_wrapper, parse_stage_args


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, sections=("series",))
    configure_host_devices(config.vision.devices)
    run = Path(args.run)
    from worldmodels.world_model import encode_run

    counts = encode_run(config, run, run / "vision")
    print(f"series: {counts['encoded']} encoded, {counts['skipped']} already there -> {run / 'series'}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "series")()
