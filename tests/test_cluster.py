"""The stages on a real multi-node Ray cluster on this machine (`scripts.local_cluster`: a head
and a worker node, separate raylets of one CPU each), joined through RAY_ADDRESS as a user
would: work lands on every node, a worker killed mid-stage loses and duplicates no episode,
and a driver killed with SIGKILL resumes on rerun.

Which node ran what is read from the process tree: every Ray worker is a child of its node's
raylet, and its title names the task it is running (`ray::EpisodeWorker.run`,
`ray::episodes_task`). Only processes of this test's own cluster are ever killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import ROOT, copy_run, run_stage
from tests.test_crash import assert_same_json, assert_same_rows, assert_same_tree
from worldmodels.data.episodes import check_episode_file, list_episodes, load_episode
from worldmodels.viz.plots import read_csv


@dataclass
class LocalCluster:
    helper: subprocess.Popen
    address: str

    def env(self) -> dict[str, str]:
        return {"RAY_ADDRESS": self.address}


@pytest.fixture(scope="module")
def cluster():
    from scripts import local_cluster

    helper, address = local_cluster.spawn(nodes=2, cpus_per_node=1)
    try:
        yield LocalCluster(helper, address)
    finally:
        local_cluster.stop(helper)  # the helper stops its nodes and removes its files


@dataclass
class NodeWatcher:
    """Polls the cluster's processes: the raylets (nodes) whose workers were seen running `task`;
    with `kill_on_worker_node`, SIGKILLs the first such worker seen on a non-head node."""

    cluster: LocalCluster
    task: str
    kill_on_worker_node: bool = False
    nodes: dict = field(default_factory=dict)  # raylet pid -> is the head
    killed: list = field(default_factory=list)
    titles: dict = field(default_factory=dict)  # (node kind, raylet pid) -> worker titles seen (for messages)

    def __enter__(self) -> NodeWatcher:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        helper = psutil.Process(self.cluster.helper.pid)
        while not self._stop.is_set():
            for proc in helper.children(recursive=True):
                try:
                    title = (proc.cmdline() or [""])[0].strip()
                    if not title.startswith("ray::"):
                        continue
                    raylet = proc.parent()
                    head = "--head" in raylet.cmdline()
                    self.titles.setdefault(("head" if head else "worker", raylet.pid), set()).add(title)
                    if title != self.task:
                        continue
                    self.nodes[raylet.pid] = head
                    if self.kill_on_worker_node and not head and not self.killed:
                        proc.send_signal(signal.SIGKILL)
                        self.killed.append(proc.pid)
                except psutil.Error:
                    continue
            time.sleep(0.02)


# 8 episodes of 200 steps: long enough that every node is seen at work and a kill lands mid-run.
ROLLOUTS = ("--rollouts.episodes", "8", "--rollouts.max_steps", "200")
_EPISODES: dict[int, dict] = {}


def expected_episode(index: int) -> dict[str, np.ndarray]:
    """Episode `index` of the tiny preset with ROLLOUTS, played here (it depends only on the
    config, the seed and the index)."""
    if index not in _EPISODES:
        from worldmodels.config import get_config
        from worldmodels.rollout.collect import run_random_episode

        config = get_config("tiny", ROLLOUTS)
        _EPISODES[index] = run_random_episode(config.env, config.rollouts, index)
    return _EPISODES[index]


def assert_expected_episodes(folder: Path, count: int) -> None:
    paths = list_episodes(folder)
    assert [p.name for p in paths] == [f"episode_{i:06d}.npz" for i in range(count)]
    for i, path in enumerate(paths):
        check_episode_file(path)
        episode, expected = load_episode(path), expected_episode(i)
        for key in ("obs", "action", "reward", "terminated", "truncated"):
            np.testing.assert_array_equal(episode[key], expected[key], err_msg=f"{path.name}:{key}")


def wait_until_idle(cluster: LocalCluster, task: str, timeout: float = 120) -> None:
    """Wait until no worker of the cluster runs `task`: a SIGKILLed driver's tasks go on until
    the raylets notice the driver is gone, and a rerun started before that finds a node busy."""
    helper, deadline = psutil.Process(cluster.helper.pid), time.monotonic() + timeout
    while True:
        busy = []
        for proc in helper.children(recursive=True):
            try:
                busy += [proc.pid] if (proc.cmdline() or [""])[0].strip() == task else []
            except psutil.Error:
                continue
        if not busy:
            return
        assert time.monotonic() < deadline, f"workers {busy} still ran {task} {timeout} s after the driver died"
        time.sleep(0.1)


def start_stage(stage: str, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the driver `proc` (and anything it started) as soon as `ready()` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the driver ended before the kill:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_rollouts_run_on_every_node_and_a_killed_worker_loses_no_episode(cluster, tmp_path):
    run = tmp_path / "run"
    with NodeWatcher(cluster, "ray::EpisodeWorker.run", kill_on_worker_node=True) as watcher:
        result = run_stage("rollouts", "--config", "tiny", "--run", str(run), *ROLLOUTS, env=cluster.env())
    assert sorted(watcher.nodes.values()) == [False, True], "episodes did not run on both nodes"
    assert watcher.killed, "no episode worker on the worker node was seen to kill"
    assert "8 written, 0 already there" in result.stdout  # each episode delivered once
    assert_expected_episodes(run / "rollouts", 8)


def test_rollouts_driver_killed_then_rerun_resumes(cluster, tmp_path):
    run = tmp_path / "run"
    args = ("--config", "tiny", "--run", str(run), *ROLLOUTS)
    driver = start_stage("rollouts", *args, env=cluster.env())
    kill_when(driver, lambda: len(list_episodes(run / "rollouts")) >= 2)
    kept = len(list_episodes(run / "rollouts"))
    assert kept < 8, "the driver finished before it was killed"
    result = run_stage("rollouts", *args, env=cluster.env())
    assert f"{8 - kept} written, {kept} already there" in result.stdout
    assert_expected_episodes(run / "rollouts", 8)


@pytest.mark.slow
def test_controller_on_every_node_survives_a_killed_worker_and_driver(cluster, tmp_path, tiny_world,
                                                                      reference_controller):
    """The tiny CMA-ES run on the cluster, with an episode worker of the worker node killed in
    generation 1 and the driver killed after it, ends exactly like the undisturbed local run."""
    reference = reference_controller
    run = copy_run(tiny_world, tmp_path / "run", parts=("vision", "series", "mdnrnn"))
    args = ("--config", "tiny", "--run", str(run))
    generations = run / "controller" / "generations.csv"
    with NodeWatcher(cluster, "ray::episodes_task", kill_on_worker_node=True) as first:
        driver = start_stage("train_controller", *args, env=cluster.env())
        kill_when(driver, lambda: (run / "controller" / "cma_state.pkl").exists())
    assert len(read_csv(generations)) == 1, "the driver was not killed between generations 1 and 2"
    assert first.killed, "no episode worker on the worker node was seen to kill"
    wait_until_idle(cluster, "ray::episodes_task")  # else the rerun may find one node still busy
    with NodeWatcher(cluster, "ray::episodes_task") as second:
        result = run_stage("train_controller", *args, env=cluster.env())
    assert "generations 1..2" in result.stdout  # resumed, not restarted
    assert sorted(first.nodes.values()) == [False, True], f"first run not on both nodes: {first.titles}"
    assert sorted(second.nodes.values()) == [False, True], f"resumed run not on both nodes: {second.titles}"

    out, ref = run / "controller", reference / "controller"
    assert_same_rows(generations, ref / "generations.csv",
                     ("generation", "mean", "best", "worst", "sigma", "check_best", "check_mean_candidate",
                      "check_kept"))
    assert_same_json(out / "best.json", ref / "best.json")
    assert_same_tree(out / "best.msgpack", ref / "best.msgpack")


@pytest.mark.slow
def test_evaluation_on_the_cluster_scores_like_a_local_run(cluster, tmp_path, reference_controller):
    reference = reference_controller
    with NodeWatcher(cluster, "ray::episodes_task") as watcher:
        run_stage("evaluate", "--config", "tiny", "--agent", str(reference), "--out", str(tmp_path / "eval"),
                  env=cluster.env())
    assert watcher.nodes, "no evaluation episode ran on the cluster"  # 2 episodes make one task: one node
    assert (tmp_path / "eval" / "scores.csv").read_text() == (reference / "eval" / "scores.csv").read_text()


def test_the_local_cluster_is_not_the_machine_default(cluster):
    """A plain `ray.init()` elsewhere on the machine must not join the test cluster: the helper
    keeps Ray's "last cluster" address file in its own RAY_TMPDIR."""
    from ray._private.utils import read_ray_address

    assert read_ray_address() != cluster.address


def test_cluster_yaml_passes_the_launcher_checks():
    """scripts/cluster.yaml as `ray up` reads it: Ray's schema with defaults filled in, a head
    and autoscaling CPU workers, every node installing this project and starting Ray from it."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "scripts" / "cluster.yaml").read_text()))
    validate_config(config)
    workers = config["available_node_types"]["cpu_worker"]
    assert config["head_node_type"] == "head" and workers["max_workers"] > workers["min_workers"]
    assert any("make .venv/.installed" in c for c in config["setup_commands"])
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert ".venv/bin/ray " in command
    assert {".venv", "runs"} <= set(config["rsync_exclude"])
