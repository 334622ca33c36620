"""Shared fixtures. Every test uses the `tiny` preset; subprocess tests run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One persistent XLA compilation cache for every process of the test session: the CLI tests
# start many short processes that compile the same tiny models.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.environ.get("WM_TEST_JAX_CACHE", "/tmp/worldmodels-test-jax-cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
os.environ.update(JAX_CACHE)
# The tests compile many small programs and run each briefly: LLVM's optimisations cost more
# than they save here (test_vae + test_generative from a cold cache: 301 s -> 142 s). Training
# and `make bench` keep XLA's defaults; every process of the session (CLI stages, Ray workers,
# the local cluster) inherits this, so compared runs are compiled alike.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def run_stage(stage: str, *args: str, check: bool = True, timeout: float = 300,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<stage> ...` as a user would, from the project root."""
    result = subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"stage {stage} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def run_in_process(stage: str, *args: str) -> str | None:
    """A stage's entry called in this process, as `make all CONFIG=doom-tiny` is in test_doom:
    for tests that run stage after stage, each subprocess would start Python, JAX and (for the
    stages with Ray) a local Ray again, 8-9 s of this machine's two cores. The `ray_local`
    fixture's Ray serves them. Errors raise (no exit code): refusals stay with `run_stage`."""
    import importlib

    return importlib.import_module(f"pipeline.{stage}").main(list(args))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the in-process tests of the session."""
    from worldmodels.parallel import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A tiny run through the CLI up to M: `make rollouts` (the Makefile's contract, as a user
    types it), then train-vae, series, train-rnn. Tests that change it work on a copy (`copy_run`)."""
    run = tmp_path_factory.mktemp("tiny_world")
    result = subprocess.run(["make", "rollouts", "CONFIG=tiny", f"RUN={run}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("train_vae", "series", "train_rnn"):
        run_stage(stage, "--config", "tiny", "--run", str(run))
    return run


def copy_run(source: Path, target: Path, parts=("rollouts", "vision", "series", "mdnrnn")) -> Path:
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for part in parts:
        if (source / part).exists():
            shutil.copytree(source / part, target / part)
    return target


@pytest.fixture(scope="session")
def reference_controller(tiny_world, tmp_path_factory) -> Path:
    """tiny_world plus an undisturbed train-controller (real env, through the CLI; its stdout in
    `train_controller.stdout`) and evaluate (RUN/eval), made once per session: test_crash and
    test_cluster compare their killed and resumed runs with it, test_real_env_training reads it."""
    run = tmp_path_factory.mktemp("undisturbed_controller")
    copy_run(tiny_world, run, parts=("vision", "series", "mdnrnn"))
    result = run_stage("train_controller", "--config", "tiny", "--run", str(run))
    (run / "train_controller.stdout").write_text(result.stdout)
    run_stage("evaluate", "--config", "tiny", "--agent", str(run), "--out", str(run / "eval"))
    return run
