"""`make train-controller` (DREAM=1 for the dream): evolve C with CMA-ES into RUN/controller."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args
from worldmodels.data.atomic import remove_stale_temporaries
from worldmodels.run_dir import FREE_FIELDS, prepare_stage_dir


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, sections=("controller",))
    from worldmodels.train.es import train_controller

    folder = prepare_stage_dir(args.run, "controller", config, sections=("controller",),
                               free_fields=FREE_FIELDS["controller"])
    remove_stale_temporaries(folder)  # left by a killed run; never read
    summary = train_controller(config, args.run)
    print("train-controller: " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                             for k, v in summary.items()}))
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "train-controller")()
