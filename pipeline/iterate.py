"""`make iterate ROUND=k`: one round of the paper's iterative training procedure on RUN.

Round k's agent plays (exploring now and then), M retrains on all data, C evolves again, all in
RUN/round<k>; a line per round goes to RUN/iterate.csv (see `worldmodels.iterate`).
`make iterate-all` (--all) runs rounds 1..iterate.rounds and resumes where it stopped."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args


def main(argv: Sequence[str] | None = None) -> str:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--round", type=int, default=1, help="round number k >= 1 (RUN/round<k>)")
        parser.add_argument("--all", action="store_true",
                            help="rounds 1..iterate.rounds, skipping finished ones (make iterate-all)")
        parser.add_argument("--table", action="store_true",
                            help="print the per-round table (RUN/iterate.csv and each round's diagnostics.json) "
                                 "as markdown, with --diagnose recomputing round ROUND's diagnostics first")
        parser.add_argument("--diagnose", action="store_true",
                            help="with --table: (re)compute RUN/round<ROUND>/diagnostics.json (a round run "
                                 "before diagnostics existed)")

    config, args = parse_stage_args(__doc__, argv, extra=extra, sections=("iterate", "rollouts", "mdnrnn"))
    from worldmodels.runtime import reuse_freed_memory

    reuse_freed_memory()  # before JAX starts: M's step re-allocates large buffers (see runtime.py)
    from worldmodels.iterate import run_round, run_rounds, write_diagnostics, write_table

    if args.table:
        if args.diagnose:
            write_diagnostics(config, args.run, args.round)
        print(write_table(args.run), end="")
    elif args.all:
        run_rounds(config, args.run)
    else:
        run_round(config, args.run, args.round)
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "iterate")()
