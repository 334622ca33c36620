"""The rollouts stage end to end through its CLI, plus determinism of one episode."""

import json
import os

import numpy as np
import pytest

from tests.conftest import copy_run, run_in_process, run_stage
from worldmodels.config import get_config
from worldmodels.data.episodes import list_episodes, load_episode
from worldmodels.rollout.collect import run_random_episode


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_world):
    """A copy of the rollouts `make rollouts CONFIG=tiny` wrote for the session's tiny_world."""
    return copy_run(tiny_world, tmp_path_factory.mktemp("run"), parts=("rollouts",))


def test_make_rollouts_writes_valid_episodes(tiny_run):
    config = get_config("tiny")
    episodes = list_episodes(tiny_run / "rollouts")
    assert [p.name for p in episodes] == [f"episode_{i:06d}.npz" for i in range(4)]
    for i, path in enumerate(episodes):
        arrays = load_episode(path)  # validates keys, dtypes, shapes
        steps = len(arrays["reward"])
        assert 0 < steps <= config.rollouts.max_steps
        assert arrays["obs"].shape == (steps, 64, 64, 3)
        assert arrays["action"].shape == (steps, 3)
        assert arrays["terminated"][-1] or arrays["truncated"][-1]
        assert not (arrays["terminated"][:-1] | arrays["truncated"][:-1]).any()
        assert str(arrays["env_id"]) == "FastCarRacing-v3" and int(arrays["seed"]) == i
        assert arrays["obs"].std() > 5  # real frames, not blanks
    saved = json.loads((tiny_run / "rollouts" / "config.json").read_text())
    assert saved["rollouts"]["episodes"] == 4 and saved["preset"] == "tiny"


def test_rerun_writes_nothing_new_and_extending_completes_missing(tiny_run, ray_local, capsys):
    folder = tiny_run / "rollouts"
    before = {p.name: os.stat(p).st_mtime_ns for p in list_episodes(folder)}
    result = run_stage("rollouts", "--config", "tiny", "--run", str(tiny_run))
    assert "0 written, 4 already there" in result.stdout
    assert {p.name: os.stat(p).st_mtime_ns for p in list_episodes(folder)} == before

    (folder / "episode_000001.npz").unlink()
    capsys.readouterr()
    # in-process on the session's Ray (the CLI's own Ray start costs more than the 2 episodes)
    run_in_process("rollouts", "--config", "tiny", "--run", str(tiny_run), "--rollouts.episodes", "5")
    assert "2 written, 3 already there" in capsys.readouterr().out
    after = {p.name: os.stat(p).st_mtime_ns for p in list_episodes(folder)}
    assert len(after) == 5
    assert all(after[name] == mtime for name, mtime in before.items() if name in after
               and name != "episode_000001.npz")


def test_corrupt_episode_on_rerun_is_refused_and_kept(tmp_path, ray_local):
    run = tmp_path / "run"
    run_in_process("rollouts", "--config", "tiny", "--run", str(run), "--rollouts.episodes", "2",
                   "--rollouts.max_steps", "20")
    bad = run / "rollouts" / "episode_000001.npz"
    bad.write_bytes(bad.read_bytes()[:1000])
    result = run_stage("rollouts", "--config", "tiny", "--run", str(run),
                       "--rollouts.episodes", "3", "--rollouts.max_steps", "20", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "episode_000001.npz is corrupt or truncated" in lines[0]
    assert len(bad.read_bytes()) == 1000  # left for the user to inspect
    assert not (run / "rollouts" / "episode_000002.npz").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "enormous"], "unknown preset 'enormous'"),
        (["--config", "tiny", "--rollouts.episodez", "3"], "unknown config field 'rollouts.episodez'"),
        (["--config", "tiny", "--rollouts.policy", "greedy"], "unknown rollout policy 'greedy'"),
        (["--config", "tiny", "--env.name", "pong"], "unknown environment 'pong'"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, args, message):
    result = run_stage("rollouts", *args, "--run", str(tmp_path / "r"), check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_stage("rollouts", "--config", "tiny", "--run", str(blocker / "sub"), check=False)
    assert result.returncode == 2 and "cannot write to run dir" in result.stderr


def test_changed_config_on_rerun_is_refused(tiny_run):
    result = run_stage("rollouts", "--config", "tiny", "--run", str(tiny_run),
                       "--rollouts.max_steps", "61", check=False)
    assert result.returncode == 2 and "rollouts.max_steps=60, now 61" in result.stderr


def test_a_refused_value_does_not_block_the_corrected_rerun(tmp_path):
    """The stage dir's saved config made nothing yet, so the corrected run replaces it."""
    run = tmp_path / "run"
    result = run_stage("rollouts", "--config", "tiny", "--run", str(run), "--rollouts.episodes", "0",
                       "--rollouts.mix", "1 brownian low=-1/0", check=False)
    assert result.returncode == 2 and "low has 2 values" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    run_in_process("rollouts", "--config", "tiny", "--run", str(run), "--rollouts.episodes", "0",
                   "--rollouts.mix", "1 brownian low=-1/0/0")
    assert "1 brownian low=-1/0/0" in (run / "rollouts" / "config.json").read_text()


def test_an_episode_depends_only_on_seed_and_index():
    config = get_config("tiny", ["--rollouts.max_steps", "40"])
    a = run_random_episode(config.env, config.rollouts, 7)
    b = run_random_episode(config.env, config.rollouts, 7)
    c = run_random_episode(config.env, config.rollouts, 8)
    for key in ("obs", "action", "reward"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["action"], c["action"])


def test_a_mix_plays_each_policy_in_turn_and_records_it():
    config = get_config("tiny", ["--rollouts.max_steps", "30",
                                 "--rollouts.mix", "2 steady,1 brownian low=-1/0/-2 high=1/0.3/0.5"])
    episodes = {i: run_random_episode(config.env, config.rollouts, i) for i in (0, 2, 3, 5)}
    walk = "brownian low=-1/0/-2 high=1/0.3/0.5"
    assert [str(e["policy"]) for e in episodes.values()] == ["steady", walk, "steady", walk]
    for i in (2, 5):
        assert episodes[i]["action"][:, 1].max() <= 0.3 and episodes[i]["action"][:, 2].max() <= 0.5
    for i in (0, 3):  # steady: nearly straight, gas near 0.5
        assert np.abs(episodes[i]["action"][:, 0]).max() < 0.5 and episodes[i]["action"][:, 1].min() > 0.25
