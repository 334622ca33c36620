"""`make knowledge-sharing`: two networks trained on half the classes each share what they learned
through generative models; table.md, accuracy.png, samples.png in RUN/knowledge_sharing."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline._cli import main_wrapper, parse_stage_args


def add_flags(parser) -> None:
    parser.add_argument("--data", default=None,
                        help="MNIST/FashionMNIST IDX folder or file (optionally .gz) or a Keras mnist.npz; "
                             "default: scikit-learn's digits (same as --sharing.data)")


def main(argv: Sequence[str] | None = None) -> str:
    config, args = parse_stage_args(__doc__, argv, extra=add_flags, sections=("sharing",))
    from dataclasses import replace

    from worldmodels.experiments.common import experiment_dir
    from worldmodels.experiments.knowledge_sharing import run_knowledge_sharing

    if args.data is not None:
        config = replace(config, sharing=replace(config.sharing, data=args.data))
    out = experiment_dir(args.run, "knowledge_sharing", config, "sharing")
    run_knowledge_sharing(config.sharing, out)
    print((out / "table.md").read_text())
    print(f"knowledge-sharing: results in {out}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "knowledge-sharing")()
