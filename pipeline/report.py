"""`make report`: write RUN/report.md from what the stages left in RUN."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args


def main(argv: Sequence[str] | None = None) -> None:
    _, args = parse_stage_args(__doc__, argv)
    from worldmodels.report import write_report

    print(f"report: {write_report(args.run)}")


if __name__ == "__main__":
    main_wrapper(main, "report")()
