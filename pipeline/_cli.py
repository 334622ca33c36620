"""What every stage entry shares: argument parsing and turning errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from worldmodels.config import Config, get_config
from worldmodels.errors import WorldModelsError


def parse_stage_args(description: str, argv: Sequence[str] | None = None,
                     extra: Callable[[argparse.ArgumentParser], None] | None = None,
                     sections: Sequence[str] = (),
                     ) -> tuple[Config, argparse.Namespace]:
    """--config PRESET --run DIR [stage flags] [--section.field value ...].

    `--help` lists the presets and every field of the stage's config `sections`, with its
    docstring and the value under the chosen preset (`--config doom-quick --help`)."""
    from worldmodels.config import PRESET_SUMMARY, PRESETS, describe_sections

    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", default="quick")
    preset = first.parse_known_args(argv)[0].config
    width = max(map(len, PRESETS))
    epilog = ["presets (--config):"] + [f"  {name:<{width}}  {PRESET_SUMMARY.get(name, '')}" for name in PRESETS]
    if sections and preset in PRESETS:
        epilog += ["", describe_sections(get_config(preset), sections)]
    epilog += ["", "Any field of any section can be set: --section.field value (see worldmodels/config.py)."]
    parser = argparse.ArgumentParser(description=description, epilog="\n".join(epilog),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quick", help=f"preset: {', '.join(PRESETS)} (default quick)")
    parser.add_argument("--run", default=None, help="run directory (default runs/<preset>)")
    if extra is not None:
        extra(parser)
    args, overrides = parser.parse_known_args(argv)
    config = get_config(args.config, overrides)
    args.run = args.run or os.path.join("runs", args.config)
    return config, args


def main_wrapper(main: Callable[[Sequence[str] | None], str | None], stage: str) -> Callable[[], None]:
    """Run `main`, printing a `WorldModelsError` as one line and exiting with status 2.
    `main` returns the run directory; the stage's wall time is added to RUN/timings.json."""

    def run() -> None:
        import warnings

        # JAX warns on any os.fork(); the stages only fork to exec (Ray's helpers, ffmpeg),
        # which is safe, so the warning would only alarm.
        warnings.filterwarnings("ignore", message="os.fork\\(\\) was called", category=RuntimeWarning)
        start = time.perf_counter()
        try:
            run_dir = main(None)
        except WorldModelsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: finished outputs are kept; rerun to continue", file=sys.stderr)
            sys.exit(130)
        seconds = time.perf_counter() - start
        if run_dir is not None:
            record_timing(run_dir, stage, seconds)
        print(f"{stage} done in {seconds:.1f} s", file=sys.stderr)

    return run


def record_timing(run_dir: str, stage: str, seconds: float) -> None:
    """Append one stage run to RUN/timings.json: {stage: [{seconds, finished}, ...]}."""
    import json
    from pathlib import Path

    from worldmodels.data.atomic import atomic_write_text

    path = Path(run_dir) / "timings.json"
    try:
        timings = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        timings = {}
    timings.setdefault(stage, []).append({"seconds": round(seconds, 2),
                                          "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    if Path(run_dir).is_dir():
        atomic_write_text(path, json.dumps(timings, indent=2))


def configure_host_devices(devices: int) -> None:
    """Expose `devices` host devices to XLA (0 = one per core), for data-parallel steps.

    Must run before jax is imported, so stage entries import the library after calling it."""
    if "jax" in sys.modules:
        return
    n = devices or os.cpu_count() or 1
    flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
