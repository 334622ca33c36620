"""kill -9 in the middle of every stage, then a rerun: the finished outputs equal those of an
undisturbed run, and no half-written file is ever left under a final name.

Each stage runs through its real CLI in a subprocess that SIGKILLs itself at a crash point
drawn (seeded: WM_CRASH_SEED, default 0) from the moments that matter for a kill: while the
k-th output file of a kind is being written (its temporary is left half-written) or just
after it is committed (the next file is not). The undisturbed runs are the session's
`tiny_world` (rollouts to M) and `reference_controller` (conftest: train-controller + evaluate).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.conftest import ROOT, copy_run, run_stage
from worldmodels.data.atomic import TMP_MARKER
from worldmodels.data.episodes import check_episode_file, list_episodes, load_episode
from worldmodels.viz.plots import read_csv

SEED = int(os.environ.get("WM_CRASH_SEED", "0"))

# stage -> (parts of the reference run it reads, its output folder, crash points). A crash
# point is (file pattern relative to the run dir, how many such commits a run surely makes).
STAGES = {
    "rollouts": ((), "rollouts", [("rollouts/episode_*.npz", 3)]),
    "train_vae": (("rollouts",), "vision", [("vision/checkpoint.msgpack", 4), ("vision/metrics.csv", 4),
                                            ("vision/params.msgpack", 1)]),
    "series": (("rollouts", "vision"), "series", [("series/episode_*.npz", 4), ("series/initial_z.npz", 1)]),
    "train_rnn": (("series", "vision"), "mdnrnn", [("mdnrnn/checkpoint.msgpack", 3), ("mdnrnn/metrics.csv", 3),
                                                    ("mdnrnn/params.msgpack", 1)]),
    "train_controller": (("vision", "series", "mdnrnn"), "controller",
                         [("controller/best_fitness.msgpack", 1), ("controller/best.msgpack", 1),
                          ("controller/best.json", 2), ("controller/generations.csv", 2),
                          ("controller/cma_state.pkl", 2)]),
    "evaluate": ((), "eval", [("eval/scores.csv", 1), ("eval/summary.json", 2), ("eval/histogram.png", 1),
                              ("eval/best.mp4", 1)]),
}


def crash_runner() -> None:
    """`python -c 'from tests.test_crash import crash_runner; crash_runner()' STAGE RUN PATTERN K MODE
    ARGS...`: run `pipeline.STAGE ARGS` and SIGKILL the process at the K-th commit (os.replace
    onto a final name) of a file matching PATTERN under RUN: MODE `during` first cuts the
    temporary to half its size (a kill mid-write), `after` kills right after the rename."""
    import fnmatch
    import runpy

    stage, root, pattern, k, mode, *args = sys.argv[1:]
    root, k = os.path.abspath(root), int(k)
    real_replace, count = os.replace, 0

    def replace(src, dst, *a, **kw):
        nonlocal count
        rel = os.path.relpath(os.path.abspath(os.fspath(dst)), root)
        hit = False
        if not rel.startswith("..") and fnmatch.fnmatch(rel, pattern):
            count += 1
            hit = count == k
        if hit and mode == "during":
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *a, **kw)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    sys.argv = [f"pipeline.{stage}", *args]
    runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=True)


def run_until_crash(stage: str, run: Path, point: tuple[str, int, str], *args: str) -> None:
    pattern, k, mode = point
    code = "from tests.test_crash import crash_runner; crash_runner()"
    proc = subprocess.Popen([sys.executable, "-c", code, stage, str(run), pattern, str(k), mode, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        try:  # anything the killed stage started (its local Ray) goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, (
        f"{stage} was not killed at {point} (exit {proc.returncode}):\n{err[-3000:]}")


def check_complete(folder: Path) -> None:
    """Every file under a final name in `folder` reads completely."""
    import imageio.v2 as imageio
    from flax import serialization
    from PIL import Image

    for path in sorted(folder.rglob("*")):
        if not path.is_file() or TMP_MARKER in path.name:
            continue
        suffix = path.suffix
        if suffix == ".npz":
            if path.parent.name == "rollouts":
                check_episode_file(path)
            with np.load(path, allow_pickle=False) as data:
                [data[k] for k in data.files]
        elif suffix == ".msgpack":
            serialization.msgpack_restore(path.read_bytes())
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".csv":
            read_csv(path)
        elif suffix == ".pkl":
            pickle.loads(path.read_bytes())  # our own CMA-ES state
        elif suffix == ".png":
            Image.open(path).verify()
        elif suffix == ".mp4":
            with imageio.get_reader(path) as video:
                assert sum(1 for _ in video) > 0, path


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARKER in p.name]


def assert_same_tree(a: Path, b: Path) -> None:
    from flax import serialization

    pa, pb = (serialization.msgpack_restore(p.read_bytes()) for p in (a, b))
    assert json.loads(pa["meta"]) == json.loads(pb["meta"]), a.name
    leaves_a, leaves_b = jax.tree.leaves(pa["state"]), jax.tree.leaves(pb["state"])
    assert len(leaves_a) == len(leaves_b), a.name
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=str(a))


def assert_same_json(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    ja, jb = (json.loads(p.read_text()) for p in (a, b))
    for key in ignore:
        ja.pop(key, None)
        jb.pop(key, None)
    assert ja == jb, a.name


def assert_same_rows(a: Path, b: Path, columns: tuple[str, ...]) -> None:
    ra, rb = read_csv(a), read_csv(b)
    assert [[r.get(c) for c in columns] for r in ra] == [[r.get(c) for c in columns] for r in rb], a.name


def assert_same_npz(a: Path, b: Path) -> None:
    with np.load(a) as da, np.load(b) as db:
        assert sorted(da.files) == sorted(db.files), a.name
        for key in da.files:
            np.testing.assert_array_equal(da[key], db[key], err_msg=f"{a.name}:{key}")


def compare_with_undisturbed(stage: str, run: Path, ref: Path) -> None:
    """The finished outputs of `stage` in `run` equal the undisturbed ones in `ref` (wall-clock
    figures aside; metrics rows are compared by step, since a resumed window averages fewer steps)."""
    if stage == "rollouts":
        names = [p.name for p in list_episodes(run / "rollouts")]
        assert names == [p.name for p in list_episodes(ref / "rollouts")]
        for name in names:
            a, b = load_episode(run / "rollouts" / name), load_episode(ref / "rollouts" / name)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    elif stage == "series":
        names = [p.name for p in list_episodes(run / "series")]
        assert names == [p.name for p in list_episodes(ref / "series")]
        for name in [*names, "initial_z.npz"]:
            assert_same_npz(run / "series" / name, ref / "series" / name)
    elif stage in ("train_vae", "train_rnn"):
        out = "vision" if stage == "train_vae" else "mdnrnn"
        for name in ("checkpoint.msgpack", "params.msgpack"):
            assert_same_tree(run / out / name, ref / out / name)
        assert_same_rows(run / out / "metrics.csv", ref / out / "metrics.csv",
                         ("step", "epoch") if out == "vision" else ("step",))
        assert_same_json(run / out / "summary.json", ref / out / "summary.json", ignore=("train_seconds_this_run",))
    elif stage == "train_controller":
        out, ref_out = run / "controller", ref / "controller"
        for name in ("best.msgpack", "best_fitness.msgpack"):
            assert_same_tree(out / name, ref_out / name)
        assert_same_json(out / "best.json", ref_out / "best.json")
        assert_same_json(out / "summary.json", ref_out / "summary.json", ignore=("train_seconds_this_run",))
        assert_same_rows(out / "generations.csv", ref_out / "generations.csv",
                         ("generation", "mean", "best", "worst", "sigma", "check_best", "check_mean_candidate",
                          "check_kept"))
        es, ref_es = (pickle.loads((o / "cma_state.pkl").read_bytes()) for o in (out, ref_out))
        assert es.countiter == ref_es.countiter and es.sigma == ref_es.sigma
        np.testing.assert_array_equal(es.mean, ref_es.mean)
    elif stage == "evaluate":
        assert (run / "eval" / "scores.csv").read_text() == (ref / "eval" / "scores.csv").read_text()
        assert_same_json(run / "eval" / "summary.json", ref / "eval" / "summary.json",
                         ignore=("agent", "seconds", "env_steps_per_s"))
        assert (run / "eval" / "best.mp4").exists() and (run / "eval" / "worst.mp4").exists()


@pytest.mark.parametrize("stage", [pytest.param(s, marks=pytest.mark.slow) if s in ("train_controller", "evaluate")
                                   else s for s in STAGES])
def test_kill_9_mid_stage_then_rerun_gives_the_undisturbed_outputs(stage, tmp_path, tiny_world, request):
    parts, out, points = STAGES[stage]
    rng = random.Random(f"{SEED}:{stage}")
    pattern, most = rng.choice(points)
    point = (pattern, rng.randint(1, most), rng.choice(["during", "after"]))
    ref = request.getfixturevalue("reference_controller") if stage in ("train_controller", "evaluate") else tiny_world
    run = copy_run(ref, tmp_path / "run", parts=parts)
    args = ["--config", "tiny", "--run", str(run)]
    if stage == "evaluate":
        args += ["--agent", str(ref), "--out", str(run / "eval")]

    run_until_crash(stage, run, point, *args)
    left = temporaries(run / out)
    if point[2] == "during":
        assert left, f"the half-written temporary of {point} is missing"
    check_complete(run)  # the kill left no half-written file under a final name

    result = run_stage(stage, *args)
    assert not temporaries(run / out), "a rerun removes the temporaries of the killed run"
    check_complete(run)
    compare_with_undisturbed(stage, run, ref)
    if stage == "rollouts":  # the episodes committed before the kill are kept, the others made once
        kept = point[1] - (point[2] == "during")
        assert f"{4 - kept} written, {kept} already there" in result.stdout, result.stdout
