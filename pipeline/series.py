"""`make series`: encode every episode of RUN/rollouts with V into RUN/series."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import configure_host_devices, main_wrapper, parse_stage_args
from worldmodels.run_dir import prepare_stage_dir


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv)
    configure_host_devices(config.vision.devices)
    from worldmodels.data.series import encode_rollouts, vision_fingerprint
    from worldmodels.train.vision import load_vision

    run = Path(args.run)
    model, params = load_vision(run / "vision", config.vision)
    folder = prepare_stage_dir(run, "series", config, sections=("env",))
    counts = encode_rollouts(run / "rollouts", folder, model, params,
                             vision_id=vision_fingerprint(run / "vision" / "params.msgpack"),
                             batch_size=config.series.batch_size, frame_size=config.env.frame_size,
                             devices=config.vision.devices)
    print(f"series: {counts['encoded']} encoded, {counts['skipped']} already there -> {folder}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "series")()
