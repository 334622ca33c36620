"""`make train-vae`: train V on RUN/rollouts; checkpoints, curves and pictures in RUN/vision."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipeline._cli import configure_host_devices, main_wrapper, parse_stage_args
from worldmodels.data.atomic import remove_stale_temporaries
from worldmodels.run_dir import FREE_FIELDS, prepare_stage_dir


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, sections=("env", "vision"))
    configure_host_devices(config.vision.devices)
    from worldmodels.train.vision import train_vision

    folder = prepare_stage_dir(args.run, "vision", config, sections=("env", "vision"),
                               free_fields=FREE_FIELDS["vision"])
    remove_stale_temporaries(folder)  # left by a killed run; never read
    summary = train_vision(config, args.run)
    print("train-vae: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in summary.items()}))
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "train-vae")()
