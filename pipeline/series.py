"""`make series`: encode every episode of RUN/rollouts with V into RUN/series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import configure_host_devices, main_wrapper, parse_stage_args
from worldmodels.run_dir import prepare_stage_dir


def encode_stage(config, run: Path, vision: Path) -> dict[str, int]:
    """RUN/rollouts -> RUN/series with the V in `vision` (`make iterate` encodes a round's
    episodes with RUN's V the same way)."""
    from worldmodels.data.series import encode_rollouts, vision_fingerprint
    from worldmodels.train.vision import load_vision

    model, params = load_vision(vision, config.vision)
    folder = prepare_stage_dir(run, "series", config, sections=("env",))
    return encode_rollouts(run / "rollouts", folder, model, params,
                           vision_id=vision_fingerprint(vision / "params.msgpack"),
                           batch_size=config.series.batch_size, frame_size=config.env.frame_size,
                           devices=config.vision.devices)


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv)
    configure_host_devices(config.vision.devices)
    run = Path(args.run)
    counts = encode_stage(config, run, run / "vision")
    print(f"series: {counts['encoded']} encoded, {counts['skipped']} already there -> {run / 'series'}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "series")()
