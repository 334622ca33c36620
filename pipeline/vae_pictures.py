"""`make vae-pictures`: a 2-d latent scatter, reconstructions, latent arithmetic and morphing of VAEs
trained on the knowledge-sharing data (`sharing.*`), in RUN/vae_pictures."""

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
    from worldmodels.experiments.pictures import make_vae_pictures

    if args.data is not None:
        config = replace(config, sharing=replace(config.sharing, data=args.data))
    out = experiment_dir(args.run, "vae_pictures", config, "sharing")
    summary = make_vae_pictures(config.sharing, out)
    print(f"vae-pictures: held-out BCE per image {summary['heldout_bce_per_image']:.1f}; pictures in {out}")
    return args.run


if __name__ == "__main__":
    main_wrapper(main, "vae-pictures")()
