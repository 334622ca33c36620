"""`make distillation`: a teacher trained on a Big split guides a student on a Small split through a
mapping phi between domains; table.md, curves.png, mapping.png in RUN/distillation."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args


def add_flags(parser) -> None:
    parser.add_argument("--data", default=None,
                        help="the student's domain (FashionMNIST in the source): MNIST-format IDX folder or file, "
                             "or a Keras mnist.npz; default: scikit-learn's digits (same as --distill.data)")
    parser.add_argument("--teacher-data", default=None,
                        help="the teacher's domain of the two-decoder experiment (MNIST in the source); default: "
                             "the student's images rotated 90 degrees with inverted intensities")


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, extra=add_flags, sections=("distill",))
    from dataclasses import replace

    from worldmodels.experiments.common import experiment_dir
    from worldmodels.experiments.distillation import run_distillation

    distill = config.distill
    if args.data is not None:
        distill = replace(distill, data=args.data)
    if args.teacher_data is not None:
        distill = replace(distill, teacher_data=args.teacher_data)
    config = replace(config, distill=distill)
    out = experiment_dir(args.run, "distillation", config, "distill")
    run_distillation(config.distill, out)
    print((out / "table.md").read_text())
    print(f"distillation: results in {out}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "distillation")()
