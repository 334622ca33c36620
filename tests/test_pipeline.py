"""The stages after rollouts end to end on the tiny preset, through the CLI."""

import json
import shutil

import jax
import numpy as np
import pytest

from tests.conftest import copy_run, run_in_process, run_stage
from worldmodels.checkpoint import read_checkpoint_meta
from worldmodels.data.series import list_series, load_series
from worldmodels.viz.plots import read_csv


@pytest.fixture(scope="module")
def rollouts(tiny_world):
    return tiny_world / "rollouts"


def new_run(tmp_path, rollouts, name):
    run = tmp_path / name
    run.mkdir()
    shutil.copytree(rollouts, run / "rollouts")
    return run


def params_of(run):
    from flax import serialization

    return serialization.msgpack_restore((run / "vision" / "params.msgpack").read_bytes())["state"]


def test_train_vae_series_train_rnn(tmp_path, tiny_world):
    run = copy_run(tiny_world, tmp_path / "a")
    summary = json.loads((run / "vision" / "summary.json").read_text())
    assert summary["steps"] > 0 and np.isfinite(summary["heldout_mse_per_pixel"])
    for name in ("checkpoint.msgpack", "params.msgpack", "metrics.csv", "curves.png",
                 "reconstructions.png", "traversals.png", "config.json"):
        assert (run / "vision" / name).exists(), name
    rows = read_csv(run / "vision" / "metrics.csv")
    assert rows and all(np.isfinite(r["loss"]) for r in rows)

    series = list_series(run / "series")
    assert len(series) == 4
    for path in series:
        s = load_series(path)
        assert s["mu"].shape[1] == 8 and s["logvar"].shape == s["mu"].shape
        assert s["action"].shape == (len(s["mu"]), 3)
    initial = np.load(run / "series" / "initial_z.npz")
    assert initial["mu"].shape == (4, 8)
    again = run_stage("series", "--config", "tiny", "--run", str(run))
    assert "0 encoded, 4 already there" in again.stdout

    summary = json.loads((run / "mdnrnn" / "summary.json").read_text())
    assert summary["steps"] == 12 and np.isfinite(summary["heldout_z_nll"])
    for name in ("checkpoint.msgpack", "params.msgpack", "metrics.csv", "curves.png", "reward.png",
                 "dream.mp4", "dream_strip.png"):
        assert (run / "mdnrnn" / name).exists(), name

    # M's bad input: sequences longer than any episode, another architecture on resume.
    other = tmp_path / "other"
    shutil.copytree(run / "series", other / "series")
    result = run_stage("train_rnn", "--config", "tiny", "--run", str(other), "--mdnrnn.seq_len", "500",
                       check=False)
    assert result.returncode == 2 and "lower --mdnrnn.seq_len" in result.stderr
    (run / "mdnrnn" / "config.json").unlink()
    result = run_stage("train_rnn", "--config", "tiny", "--run", str(run), "--mdnrnn.hidden", "12",
                       check=False)
    assert result.returncode == 2 and "trained with mdnrnn.hidden=16" in result.stderr


def test_resumed_training_equals_uninterrupted(tmp_path, rollouts):
    """In-process (test_crash resumes the CLI after a kill -9): the three runs share one process's
    devices, so their sums run in the same order."""
    straight = new_run(tmp_path, rollouts, "straight")
    run_in_process("train_vae", "--config", "tiny", "--run", str(straight), "--vision.max_steps", "13")
    resumed = new_run(tmp_path, rollouts, "resumed")
    run_in_process("train_vae", "--config", "tiny", "--run", str(resumed), "--vision.max_steps", "6")
    assert read_checkpoint_meta(resumed / "vision" / "checkpoint.msgpack")["step"] == 6
    run_in_process("train_vae", "--config", "tiny", "--run", str(resumed), "--vision.max_steps", "13")
    assert read_checkpoint_meta(resumed / "vision" / "checkpoint.msgpack")["step"] == 13
    for a, b in zip(jax.tree.leaves(params_of(straight)), jax.tree.leaves(params_of(resumed)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    steps = [r["step"] for r in read_csv(resumed / "vision" / "metrics.csv")]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume
    lines = (resumed / "vision" / "metrics.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == [str(s) for s in steps]  # "6", not "6.0"


def test_bad_input(tmp_path, rollouts):
    empty = tmp_path / "empty"
    result = run_stage("train_vae", "--config", "tiny", "--run", str(empty), check=False)
    assert result.returncode == 2 and "run `make rollouts` first" in result.stderr
    result = run_stage("series", "--config", "tiny", "--run", str(empty), check=False)
    assert result.returncode == 2 and "run `make train-vae` first" in result.stderr
    result = run_stage("train_rnn", "--config", "tiny", "--run", str(empty), check=False)
    assert result.returncode == 2 and "run `make series` first" in result.stderr

    run = new_run(tmp_path, rollouts, "b")
    run_in_process("train_vae", "--config", "tiny", "--run", str(run), "--vision.max_steps", "2")
    result = run_stage("train_vae", "--config", "tiny", "--run", str(run), "--vision.latent_dim", "4",
                       check=False)
    assert result.returncode == 2 and "vision.latent_dim=8, now 4" in result.stderr
    (run / "vision" / "config.json").unlink()  # even without the saved config, the checkpoint says
    result = run_stage("train_vae", "--config", "tiny", "--run", str(run), "--vision.latent_dim", "4",
                       check=False)
    assert result.returncode == 2 and "trained with vision.latent_dim=8" in result.stderr
    result = run_stage("series", "--config", "tiny", "--run", str(run), "--vision.latent_dim", "4",
                       check=False)
    assert result.returncode == 2 and "latent_dim" in result.stderr


@pytest.mark.parametrize("env,applied", [({}, "True"), ({"WORLDMODELS_MALLOC": "default"}, "False")])
def test_train_rnn_can_keep_freed_memory_before_jax_starts(env, applied):
    """`make train-rnn` sets glibc to reuse freed pages before JAX starts (importing its entry
    must not start JAX); WORLDMODELS_MALLOC=default leaves the allocator alone."""
    import os
    import subprocess
    import sys

    code = ("import sys, pipeline.train_rnn; jax_before = 'jax' in sys.modules; "
            "from worldmodels.runtime import reuse_freed_memory; print(reuse_freed_memory(), jax_before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "WORLDMODELS_MALLOC": "", **env}).stdout.split()
    assert out == [applied, "False"]


def test_carry_state_training_resumes_exactly(tmp_path, tiny_world):
    """`mdnrnn.carry_state`: the lanes' LSTM states go into the checkpoint and their places are
    replayed, so a run stopped at a checkpoint and resumed ends with the same M."""
    from flax import serialization

    from worldmodels.config import get_config
    from worldmodels.train.mdnrnn import train_mdnrnn

    def config(steps):
        return get_config("tiny", ["--mdnrnn.carry_state", "true", "--mdnrnn.seq_len", "16",
                                   "--mdnrnn.checkpoint_every", "5", "--mdnrnn.steps", str(steps)])

    straight, resumed = (copy_run(tiny_world, tmp_path / name, parts=("series",)) for name in ("a", "b"))
    summary = train_mdnrnn(config(12), straight, progress=False)
    train_mdnrnn(config(5), resumed, progress=False)
    assert read_checkpoint_meta(resumed / "mdnrnn" / "checkpoint.msgpack")["step"] == 5
    train_mdnrnn(config(12), resumed, progress=False)

    def params(run):
        return serialization.msgpack_restore((run / "mdnrnn" / "params.msgpack").read_bytes())["state"]

    for a, b in zip(jax.tree.leaves(params(straight)), jax.tree.leaves(params(resumed)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert summary["steps"] == 12 and np.isfinite(summary["heldout_z_nll"])

    # `--series`: M on several series folders (a run's and its rounds'), each split alike.
    import pipeline.train_rnn

    both = tmp_path / "both"
    pipeline.train_rnn.main(["--config", "tiny", "--run", str(both), "--series", str(straight / "series"),
                             str(resumed / "series"), "--mdnrnn.steps", "2"])
    summary = json.loads((both / "mdnrnn" / "summary.json").read_text())
    assert summary["train_episodes"] + summary["heldout_episodes"] == 2 * len(list_series(straight / "series"))
    result = run_stage("train_rnn", "--config", "tiny", "--run", str(both), "--series", str(tmp_path / "nope"),
                       check=False)
    assert result.returncode == 2 and "nope" in result.stderr and "run `make series` first" in result.stderr


def test_predict_delta_m_trains_and_dreams(tmp_path, tiny_world, ray_local):
    """`--mdnrnn.predict_delta true` through the stages after series: M trains (held-out figures
    computed on z, not on the change), C evolves in its dream, and the run's C loads it as such."""
    run = copy_run(tiny_world, tmp_path / "delta", parts=("vision", "series"))
    run_in_process("train_rnn", "--config", "tiny", "--run", str(run), "--mdnrnn.predict_delta", "true")
    summary = json.loads((run / "mdnrnn" / "summary.json").read_text())
    assert np.isfinite(summary["heldout_next_z_mse"]) and np.isfinite(summary["heldout_copy_z_mse"])
    assert read_checkpoint_meta(run / "mdnrnn" / "params.msgpack")["mdnrnn"]["predict_delta"] is True
    run_in_process("train_controller", "--config", "tiny", "--run", str(run), "--controller.dream", "1",
                   "--mdnrnn.predict_delta", "true", "--controller.generations", "1")
    assert len(read_csv(run / "controller" / "generations.csv")) == 1
    plain = run_stage("train_controller", "--config", "tiny", "--run", str(tmp_path / "delta"),
                      "--controller.dream", "1", "--controller.generations", "2", check=False)
    assert plain.returncode == 2 and "mdnrnn.predict_delta=True" in plain.stderr
