"""`make train-rnn`: train M on RUN/series (or --series DIR ...); checkpoints, curves and held-out
checks in RUN/mdnrnn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pipeline._cli import main_wrapper, parse_stage_args
from worldmodels.data.atomic import remove_stale_temporaries
from worldmodels.run_dir import FREE_FIELDS, prepare_stage_dir


def main(argv: Sequence[str] | None = None) -> str:
    def extra(parser):
        parser.add_argument("--series", nargs="+", default=None, metavar="DIR",
                            help="series folders to train on (default RUN/series), each split into "
                                 "train and held-out alike: e.g. a run's and its iterate rounds'")

    config, args = parse_stage_args(__doc__, argv, extra=extra, sections=("mdnrnn",))
    from worldmodels.runtime import reuse_freed_memory

    reuse_freed_memory()  # before JAX starts: M's step re-allocates large buffers (see runtime.py)
    from worldmodels.train.mdnrnn import train_mdnrnn

    folder = prepare_stage_dir(args.run, "mdnrnn", config, sections=("mdnrnn",), free_fields=FREE_FIELDS["mdnrnn"])
    remove_stale_temporaries(folder)  # left by a killed run; never read
    summary = train_mdnrnn(config, args.run, series=[Path(f) for f in args.series] if args.series else None)
    print("train-rnn: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                      for k, v in summary.items()}))
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "train-rnn")()
