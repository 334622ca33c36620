"""C: CMA-ES on a known function, resumable search, the controller stage in the dream and in
the real env, evaluation, and a Ray worker killed mid-generation."""

import dataclasses
import json
import os
import pickle
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import copy_run, run_in_process, run_stage
from worldmodels.errors import ConfigError, DataError
from worldmodels.train.es import OLD_NAMES, make_cma
from worldmodels.viz.plots import read_csv


def test_cma_es_minimises_a_quadratic():
    target = np.array([1.0, -2.0, 0.5, 3.0])
    es = make_cma(4, population=8, sigma0=0.5, seed=0)
    for _ in range(120):
        xs = np.asarray(es.ask())
        es.tell(list(xs), list(((xs - target) ** 2).sum(axis=1)))
    np.testing.assert_allclose(es.mean, target, atol=1e-3)


def test_cma_state_pickles_and_resumes_the_same_search():
    def run(generations, es=None):
        es = es or make_cma(3, population=6, sigma0=0.3, seed=5)
        for _ in range(generations):
            xs = np.asarray(es.ask())
            es.tell(list(xs), list((xs ** 2).sum(axis=1)))
        return es

    straight = run(6)
    resumed = run(3, pickle.loads(pickle.dumps(run(3))))
    np.testing.assert_array_equal(straight.mean, resumed.mean)
    assert straight.sigma == resumed.sigma


def test_population_too_small():
    with pytest.raises(ConfigError, match="at least 2"):
        make_cma(5, population=1, sigma0=0.1, seed=0)


def test_dream_training_resumes_and_evaluates(tmp_path, tiny_world, ray_local, capsys):
    """The CLI once per stage (train-controller, export-agent; evaluate's is the reference run's in
    test_crash); the resumed search, the evaluations and the report in this process (`run_in_process`)."""
    straight = copy_run(tiny_world, tmp_path / "straight")
    run_stage("train_controller", "--config", "tiny", "--run", str(straight), "--controller.dream", "1")
    rows = read_csv(straight / "controller" / "generations.csv")
    assert [r["generation"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["mean"]) and "check_best" in r for r in rows)
    for name in ("best.msgpack", "best_fitness.msgpack", "cma_state.pkl", "curves.png", "summary.json"):
        assert (straight / "controller" / name).exists(), name

    resumed = copy_run(tiny_world, tmp_path / "resumed")
    run_in_process("train_controller", "--config", "tiny", "--run", str(resumed), "--controller.dream", "1",
                   "--controller.generations", "1")
    # As a run written before the checks' columns were renamed (real_* -> check_*) left them.
    ctrl = resumed / "controller"
    for name in ("generations.csv", "best.json"):
        text = (ctrl / name).read_text()
        for old, new in sorted(OLD_NAMES.items(), key=lambda kv: -len(kv[1])):
            text = text.replace(f'"{new}"' if name == "best.json" else new, f'"{old}"' if name == "best.json" else old)
        assert "check" not in text.replace('"checks"', ""), text
        (ctrl / name).write_text(text)
    run_in_process("train_controller", "--config", "tiny", "--run", str(resumed), "--controller.dream", "1")
    resumed_rows = read_csv(ctrl / "generations.csv")
    assert [r["check_kept"] for r in resumed_rows] == [r["check_kept"] for r in rows]
    assert json.loads((ctrl / "best.json").read_text())["check"] == max(r["check_kept"] for r in rows)
    a = pickle.loads((straight / "controller" / "cma_state.pkl").read_bytes())
    b = pickle.loads((resumed / "controller" / "cma_state.pkl").read_bytes())
    np.testing.assert_array_equal(a.mean, b.mean)
    assert [r["best"] for r in read_csv(resumed / "controller" / "generations.csv")] == [r["best"] for r in rows]

    capsys.readouterr()
    run_in_process("evaluate", "--config", "tiny", "--run", str(straight))
    stdout = capsys.readouterr().out
    summary = json.loads((straight / "eval" / "summary.json").read_text())
    assert summary["env_id"] == "CarRacing-v3" and summary["episodes"] == 2
    assert summary["best_episode"]["replayed_return"] == pytest.approx(summary["max"])  # deterministic
    for name in ("scores.csv", "histogram.png", "best.mp4", "worst.mp4"):
        assert (straight / "eval" / name).exists(), name
    assert "over 2 episodes of CarRacing-v3" in stdout
    # scripts/dream_matrix.py: the run's C scored in its own M's dream, beside its real score.
    from scripts.dream_matrix import main as dream_matrix

    dream_matrix(["--runs", str(straight), "--worlds", str(straight), "--episodes", "2",
                  "--out", str(tmp_path / "matrix.json")])
    (row,) = json.loads((tmp_path / "matrix.json").read_text())
    assert row["real"] == summary["mean"] and np.isfinite(row[str(straight)])
    run_in_process("report", "--config", "tiny", "--run", str(straight))
    report = (straight / "report.md").read_text()
    assert "## 5. Evaluation" in report and "## 4. C (controller)" in report

    # Shipping: the exported agent (V and M as float16) loads as float32 and evaluates alone.
    agent = tmp_path / "agents" / "tiny"
    run_stage("export_agent", "--config", "tiny", "--run", str(straight), "--agent", str(agent))
    again = run_stage("export_agent", "--config", "tiny", "--run", str(straight), "--agent", str(agent),
                      check=False)
    assert again.returncode == 2 and "already holds an agent" in again.stderr
    assert sorted(p.name for p in agent.iterdir()) == ["agent.json", "config.json", "controller", "dream.npz",
                                                       "mdnrnn", "vision"]
    from worldmodels.world_model import load_world_model

    shipped, trained = load_world_model(agent), load_world_model(straight)
    for a, b in zip(jax.tree.leaves(shipped.vision_params), jax.tree.leaves(trained.vision_params), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)  # float16 rounding only
    # Under another preset's eval settings (quick: 1,000-step cap) the agent keeps its own cap (tiny: 40).
    run_in_process("evaluate", "--config", "quick", "--agent", str(agent), "--out", str(tmp_path / "agent_eval"),
                   "--eval.episodes", "2", "--eval.videos", "false")
    shipped_eval = json.loads((tmp_path / "agent_eval" / "summary.json").read_text())
    assert shipped_eval["episodes"] == 2 and shipped_eval["max_steps"] == 40
    assert all(int(r["steps"]) <= 40 for r in read_csv(tmp_path / "agent_eval" / "scores.csv"))
    incomplete = copy_run(tiny_world, tmp_path / "incomplete")
    result = run_stage("export_agent", "--config", "tiny", "--run", str(incomplete), "--agent",
                       str(tmp_path / "nope"), check=False)
    assert result.returncode == 2 and "controller/best.msgpack" in result.stderr
    assert not (tmp_path / "nope").exists()


def _dream_scorers(tiny_world, tmp_path):
    """(scorer(*overrides) -> DreamScorer on the tiny run, 3 random candidates, the folder of
    a second M: the run's own with its parameters scaled by 1.5)."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.checkpoint import read_checkpoint_meta, save_checkpoint
    from worldmodels.config import get_config
    from worldmodels.train.es import DreamScorer
    from worldmodels.world_model import load_world_model

    dream = ["--controller.dream", "1", "--controller.checks", "dream", "--controller.rollouts", "4",
             "--controller.eval_episodes", "4"]
    world = load_world_model(tiny_world, get_config("tiny", dream))
    scorer = lambda *more: DreamScorer(world, get_config("tiny", [*dream, *more]), tiny_world / "series")
    dim = len(ravel_pytree(world.controller_template())[0])
    candidates = np.random.default_rng(0).normal(0, 0.5, (3, dim)).astype(np.float32)
    other = tmp_path / "other" / "mdnrnn"
    other.mkdir(parents=True)
    meta = read_checkpoint_meta(tiny_world / "mdnrnn" / "params.msgpack")
    save_checkpoint(other / "params.msgpack", jax.tree.map(lambda a: a * 1.5, world.rnn_params), meta)
    return scorer, candidates, other


def test_check_start_keeps_the_start_unless_a_check_beats_it(tmp_path, tiny_world):
    """controller.check_start: the start C is checked before generation 1 and stays the kept C
    (generation 0) until a generation's check beats it; after each step of a resumed search the
    kept check is the best of the start's and every generation's."""
    first = copy_run(tiny_world, tmp_path / "first")
    run_in_process("train_controller", "--config", "tiny", "--run", str(first), "--controller.dream", "1",
                   "--controller.checks", "dream")
    start = first / "controller" / "best.msgpack"
    run = copy_run(tiny_world, tmp_path / "from_start")
    args = ["--config", "tiny", "--run", str(run), "--controller.dream", "1", "--controller.checks", "dream",
            "--controller.init_from", str(start), "--controller.check_start", "true", "--controller.eval_every", "1"]
    seen = set()
    for generations in (1, 2, 3):
        run_in_process("train_controller", *args, "--controller.generations", str(generations))
        best = json.loads((run / "controller" / "best.json").read_text())
        rows = read_csv(run / "controller" / "generations.csv")
        checks = [best["start_check"]] + [max(r["check_best"], r["check_mean_candidate"]) for r in rows]
        assert len(rows) == generations and best["check"] == pytest.approx(max(checks))
        kept = serialization_state(run / "controller" / "best.msgpack")["w"]
        if best["which"] == "start":
            assert best["generation"] == 0 and max(checks[1:]) <= best["start_check"]
            np.testing.assert_array_equal(kept, serialization_state(start)["w"])
        else:
            assert best["generation"] >= 1 and not np.array_equal(kept, serialization_state(start)["w"])
        seen.add(best["which"] == "start")
    assert True in seen  # the start was kept at least once (a check only ties or falls below it)


def serialization_state(path):
    from flax import serialization

    return serialization.msgpack_restore(path.read_bytes())["state"]


def test_dream_worlds_split_the_rollouts_among_other_ms(tmp_path, tiny_world):
    """controller.dream_worlds: the run's own M listed twice is the plain dream (the same episode
    keys, split in two); another M changes the scores; counts that do not split are refused."""
    scorer, candidates, other = _dream_scorers(tiny_world, tmp_path)
    plain = scorer()(candidates, 1)[0]
    twice = scorer("--controller.dream_worlds", f"{tiny_world},{tiny_world / 'mdnrnn'}")(candidates, 1)[0]
    np.testing.assert_allclose(twice, plain, rtol=1e-4)
    mixed = scorer("--controller.dream_worlds", f"{tiny_world},{other}")
    assert not np.allclose(mixed(candidates, 1)[0], plain)
    assert mixed.returns(candidates, 4).shape == (3, 4)
    with pytest.raises(ConfigError, match="controller.rollouts=3 does not split evenly"):
        scorer("--controller.dream_worlds", f"{tiny_world},{other}", "--controller.rollouts", "3")
    with pytest.raises(ConfigError, match="controller.eval_episodes=5"):
        scorer("--controller.dream_worlds", f"{tiny_world},{other}", "--controller.eval_episodes", "5")


def test_dream_ensemble_dreams_every_episode_in_all_the_ms(tmp_path, tiny_world):
    """controller.dream_ensemble: the run's own M twice is the plain dream (same keys, same
    draws); with another M the scores change and 'max' (the most worried member's P(done))
    differs from 'mean'; bad values or a single world are refused."""
    scorer, candidates, other = _dream_scorers(tiny_world, tmp_path)
    plain = scorer()(candidates, 1)[0]
    for rule in ("mean", "max"):
        twice = scorer("--controller.dream_worlds", f"{tiny_world},{tiny_world}",
                       "--controller.dream_ensemble", rule)
        np.testing.assert_allclose(twice(candidates, 1)[0], plain, rtol=1e-4)
        np.testing.assert_allclose(twice.returns(candidates, 4), scorer().returns(candidates, 4), rtol=1e-4)
    ensembles = {rule: scorer("--controller.dream_worlds", f"{tiny_world},{other}",
                              "--controller.dream_ensemble", rule)(candidates, 1)[0] for rule in ("mean", "max")}
    assert not np.allclose(ensembles["mean"], plain) and not np.allclose(ensembles["mean"], ensembles["max"])
    # Nothing is split among the worlds, so any count of episodes goes.
    scorer("--controller.dream_worlds", f"{tiny_world},{other}", "--controller.dream_ensemble", "max",
           "--controller.rollouts", "3")
    with pytest.raises(ConfigError, match="controller.dream_ensemble='min'"):
        scorer("--controller.dream_worlds", f"{tiny_world},{other}", "--controller.dream_ensemble", "min")
    with pytest.raises(ConfigError, match="needs two or more controller.dream_worlds"):
        scorer("--controller.dream_ensemble", "max")


def test_check_worlds_score_the_dream_checks_in_held_out_ms(tmp_path, tiny_world):
    """controller.check_worlds: the run's own M as the held-out world gives the plain checks
    (same keys, C's own LSTM reading the frames); another M gives other checks while training
    scores stay those of the run's M; counts that do not split, or real checks, are refused."""
    from worldmodels.config import get_config
    from worldmodels.train.es import train_controller

    scorer, candidates, other = _dream_scorers(tiny_world, tmp_path)
    plain = scorer()
    np.testing.assert_allclose(plain.checks(candidates, 4), plain.returns(candidates, 4))
    own = scorer("--controller.check_worlds", str(tiny_world))
    np.testing.assert_allclose(own.checks(candidates, 4), plain.returns(candidates, 4), rtol=1e-4)
    held_out = scorer("--controller.check_worlds", f"{tiny_world},{other}")
    assert held_out.checks(candidates, 4).shape == (3, 4)
    assert not np.allclose(held_out.checks(candidates, 4), plain.returns(candidates, 4))
    np.testing.assert_allclose(held_out(candidates, 1)[0], plain(candidates, 1)[0])  # training: own M
    with pytest.raises(ConfigError, match="controller.eval_episodes=3 does not split evenly among the 2 "
                                          "controller.check_worlds"):
        scorer("--controller.check_worlds", f"{tiny_world},{other}", "--controller.eval_episodes", "3")
    real = get_config("tiny", ["--controller.check_worlds", str(other)])
    with pytest.raises(ConfigError, match="controller.check_worlds: held-out Ms score dream checks only"):
        train_controller(real, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_m_trained_on_mu_dreams_from_mu(tiny_world, tmp_path):
    """M's checkpoint records mdnrnn.sample_z: an M trained on mu (sample_z false) dreams from
    the first frame's mu (as the agent acts on mu), one trained on draws from a draw of V's
    posterior, whatever train-controller's config says; a checkpoint from before that record
    follows the config."""
    import shutil

    from worldmodels.checkpoint import _read, read_checkpoint_meta, save_checkpoint
    from worldmodels.config import get_config
    from worldmodels.envs.dream import DreamEnv
    from worldmodels.train.es import DreamScorer
    from worldmodels.world_model import load_world_model

    run = tmp_path / "run"
    run.mkdir()
    for part in ("vision", "series"):
        (run / part).symlink_to(tiny_world / part)
    shutil.copytree(tiny_world / "mdnrnn", run / "mdnrnn")
    ckpt = run / "mdnrnn" / "params.msgpack"
    state, meta = _read(ckpt)
    assert read_checkpoint_meta(tiny_world / "mdnrnn" / "params.msgpack")["sample_z"] is True

    def starts_at_mu(recorded, configured):
        save_checkpoint(ckpt, state, {k: v for k, v in meta.items() if k != "sample_z"}
                        | ({} if recorded is None else {"sample_z": recorded}))
        config = get_config("tiny", ["--controller.dream", "1", "--mdnrnn.sample_z", configured])
        world = load_world_model(run, config)
        params = DreamScorer(world, config, run / "series").params
        _, reset = DreamEnv(world.module).reset(jax.random.key(0), params)
        z, mu = np.asarray(reset.z), np.asarray(params.initial_mu)
        if any(np.array_equal(z, m) for m in mu):
            return True
        assert not any(np.allclose(z, m, atol=1e-3) for m in mu)
        return False

    assert starts_at_mu(recorded=False, configured="true")
    assert not starts_at_mu(recorded=True, configured="false")
    assert starts_at_mu(recorded=None, configured="false")
    assert not starts_at_mu(recorded=None, configured="true")


def test_stall_steps_end_an_episode_without_reward(tiny_world):
    from worldmodels.agent import make_agent_step, run_episodes
    from worldmodels.config import get_config
    from worldmodels.world_model import load_world_model

    world = load_world_model(tiny_world, get_config("tiny"))
    step = make_agent_step(world)
    parked = jax.tree.map(jnp.zeros_like, world.controller_template())
    parked["b"] = jnp.asarray([0.0, -20.0, 20.0])  # no gas, full brake: the car never reaches a tile
    full = run_episodes(world, step, [parked], [3], "FastCarRacing-v3", max_steps=60)
    cut = run_episodes(world, step, [parked], [3], "FastCarRacing-v3", max_steps=60, stall_steps=10)
    # The first step touches the start tile (a positive reward); then 10 steps of -0.1 end it.
    assert full["steps"][0] == 60 and cut["steps"][0] == 11
    assert full["returns"][0] - cut["returns"][0] == pytest.approx(-0.1 * 49, abs=1e-6)


def test_agent_policy_plays_the_agent_and_explores(tiny_world):
    """`make iterate`'s rollout policy: with explore 0 it is the evaluated agent step for step
    (M's state carried along); with explore 1 every action is the random policy's."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.agent import make_agent_step, run_episodes
    from worldmodels.config import get_config
    from worldmodels.rollout.collect import agent_spec, run_random_episode
    from worldmodels.world_model import load_world_model

    config = get_config("tiny")
    world = load_world_model(tiny_world, config)
    ctrl = jax.tree.map(lambda a: 0.3 * jnp.ones_like(a), world.controller_template())
    ctrl["b"] = jnp.asarray([0.0, 2.0, -2.0])  # gas: the car moves, frames change
    flat = np.asarray(ravel_pytree(ctrl)[0])
    rollouts = dataclasses.replace(config.rollouts, max_steps=30, seed=5)
    played = run_random_episode(config.env, rollouts, 0, agent_spec(world, flat, explore=0.0))
    assert str(played["policy"]) == "agent" and len(played["action"]) == 30
    reference = run_episodes(world, make_agent_step(world), [ctrl], [5], config.env.train_id, max_steps=30)
    assert played["reward"].sum() == pytest.approx(reference["returns"][0], abs=1e-4)
    steer = played["action"][:, 0]
    assert np.ptp(steer) > 0  # C's steering follows z and h: not a constant action

    randomly = run_random_episode(config.env, rollouts, 0, agent_spec(world, flat, explore=1.0))
    assert not np.allclose(randomly["action"], played["action"])
    assert np.abs(np.diff(randomly["action"], axis=0)).max() < 0.5  # a Brownian walk, never C's jumps


def test_exploit_share_plays_the_favourite_on_its_share_of_episodes(tiny_world):
    """iterate.exploit_share: the alternate C plays exactly its share of the episode indices,
    spread evenly, and an episode it plays is the one it plays alone."""
    from jax.flatten_util import ravel_pytree

    from worldmodels.config import get_config
    from worldmodels.rollout.collect import agent_spec, plays_alternate, run_random_episode
    from worldmodels.world_model import load_world_model

    assert [i for i in range(12) if plays_alternate(i, 0.25)] == [3, 7, 11]
    assert sum(plays_alternate(i, 0.1) for i in range(200)) == 20
    assert not any(plays_alternate(i, 0.0) for i in range(50)) and all(plays_alternate(i, 1.0) for i in range(50))

    config = get_config("tiny")
    world = load_world_model(tiny_world, config)
    template = world.controller_template()
    kept, favourite = (jax.tree.map(lambda a, s=s: s * jnp.ones_like(a), template) for s in (0.3, -0.3))
    for c in (kept, favourite):
        c["b"] = jnp.asarray([0.0, 2.0, -2.0])  # gas: the car moves, frames change
    flat_kept, flat_fav = (np.asarray(ravel_pytree(c)[0]) for c in (kept, favourite))
    rollouts = dataclasses.replace(config.rollouts, max_steps=20, seed=5)
    mixed = agent_spec(world, flat_kept, 0.0, flat_fav, 0.5)
    for index, alone in ((0, flat_kept), (1, flat_fav)):
        got = run_random_episode(config.env, rollouts, index, mixed)
        want = run_random_episode(config.env, rollouts, index, agent_spec(world, alone, 0.0))
        np.testing.assert_array_equal(got["action"], want["action"])
    other = run_random_episode(config.env, rollouts, 1, agent_spec(world, flat_kept, 0.0))
    assert not np.allclose(other["action"], run_random_episode(config.env, rollouts, 1, mixed)["action"])


def test_real_env_training(reference_controller):
    """`make train-controller` in the real env: the session's undisturbed reference run (test_crash
    and test_cluster compare their killed and resumed runs with it)."""
    run = reference_controller
    assert "train C (real env)" in (run / "train_controller.stdout").read_text()
    rows = read_csv(run / "controller" / "generations.csv")
    assert len(rows) == 2 and all(r["steps_per_s"] > 0 for r in rows)


def test_bad_agent_dir(tmp_path):
    result = run_stage("evaluate", "--config", "tiny", "--agent", str(tmp_path), check=False)
    assert result.returncode == 2 and "is not an agent" in result.stderr


def _kill_one_episode_worker(stop: threading.Event, killed: list) -> None:
    import psutil

    # Only this test's own Ray: its raylet is a child of this process and the workers are the
    # raylet's children. Other Ray sessions on the machine (a training run) are left alone.
    me = psutil.Process(os.getpid())
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "ray::episodes_task" in cmd:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.05)


@pytest.mark.filterwarnings("ignore:os.fork")
def test_a_killed_worker_does_not_lose_the_generation(tiny_world):
    from worldmodels.parallel import ParallelEpisodes, init_ray
    from worldmodels.world_model import load_world_model

    init_ray(num_cpus=2)
    world = load_world_model(tiny_world, None) if (tiny_world / "config.json").exists() else None
    from worldmodels.config import get_config

    world = world or load_world_model(tiny_world, get_config("tiny"))
    from jax.flatten_util import ravel_pytree

    flat, _ = ravel_pytree(world.controller_template())
    controllers = np.stack([np.asarray(flat) * s for s in (0.5, 1.0, 1.5, 2.0)])
    seeds = np.arange(4) + 100
    episodes = ParallelEpisodes(world, workers=2, max_task_episodes=2)
    undisturbed = episodes.run(controllers, seeds, "FastCarRacing-v3", 150)

    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_episode_worker, args=(stop, killed), daemon=True)
    killer.start()
    disturbed = episodes.run(controllers, seeds, "FastCarRacing-v3", 150)
    stop.set()
    killer.join()
    assert killed, "no episode worker was seen to kill"
    np.testing.assert_array_equal(disturbed["returns"], undisturbed["returns"])
    np.testing.assert_array_equal(disturbed["steps"], undisturbed["steps"])


def test_action_maps():
    """'original' brakes 0 at a neutral output (the original code's), 'squash' 0.5; Doom has one."""
    import dataclasses

    import jax.numpy as jnp

    from worldmodels.config import get_config
    from worldmodels.envs import controller_squash
    from worldmodels.envs.carracing import original_action
    from worldmodels.errors import ConfigError

    config = get_config("tiny")
    y = jnp.array([[0.0, 0.0, 0.0], [2.0, -1.0, -3.0], [-0.5, 3.0, 0.7]])
    squash = np.asarray(controller_squash(config)(y))
    np.testing.assert_allclose(squash[0], [0.0, 0.5, 0.5], atol=1e-6)
    original = controller_squash(dataclasses.replace(config, controller=dataclasses.replace(
        config.controller, action_map="original")))
    out = np.asarray(original(y))
    np.testing.assert_allclose(out[0], [0.0, 0.5, 0.0], atol=1e-6)
    for row, got in zip(np.asarray(y), out, strict=True):  # the numpy reference the 'steady' policy uses
        np.testing.assert_allclose(got, original_action(row), atol=1e-6)
    assert (out[:, 2] >= 0).all() and (out[:, 2] <= 1).all() and out[1, 2] == 0.0
    doom = get_config("doom-tiny", ["--controller.action_map", "original"])
    with pytest.raises(ConfigError, match="action_map"):
        controller_squash(doom)


def test_carracing_iterate_chain_two_rounds_resumes(reference_controller, tmp_path):
    """`make iterate-all` on CarRacing (tiny sizes, the carracing-iterate recipe): two rounds in
    which the agent drives, M retrains on old + new series, C starts from the previous round's C
    under the action map it was evolved with and evolves in the dream; a rerun finds both rounds done."""
    import shutil

    import pipeline.iterate
    from worldmodels.data.episodes import list_episodes, load_episode

    run = copy_run(reference_controller, tmp_path / "run", parts=("vision", "series", "mdnrnn", "controller"))
    shutil.copyfile(reference_controller / "controller" / "config.json", run / "config.json")
    argv = ["--config", "tiny", "--run", str(run), "--iterate.rounds", "2", "--iterate.episodes", "2",
            "--iterate.rnn_steps", "3", "--iterate.init_c", "previous", "--controller.action_map", "squash",
            "--controller.dream", "true", "--controller.generations", "1", "--eval.videos", "false",
            "--iterate.exploit_share", "0.5"]
    with pytest.raises(ConfigError, match="init_c"):
        pipeline.iterate.main([*argv, "--iterate.init_c", "last"])
    # The reference C was evolved with the squash map: starting from it under another map is refused.
    with pytest.raises(ConfigError, match="action_map 'squash'.*--controller.action_map squash"):
        pipeline.iterate.main([*argv, "--controller.action_map", "original"])
    with pytest.raises(ConfigError, match="exploit_share"):
        pipeline.iterate.main([*argv, "--iterate.exploit_share", "1.5"])
    with pytest.raises(ConfigError, match="refit_c.*--iterate.init_c previous"):
        pipeline.iterate.main([*argv, "--iterate.refit_c", "true", "--iterate.init_c", "scratch"])
    assert not (run / "round1").exists()  # refused before anything was written
    pipeline.iterate.main([*argv, "--round", "1"])
    # Round 2 carries round 1's C to its retrained M (iterate.refit_c) before the search.
    pipeline.iterate.main([*argv, "--iterate.refit_c", "true", "--all"])
    refit = json.loads((run / "round2" / "c_refit" / "report.json").read_text())
    assert refit["train_frames"] > 0 and len(refit["train_r2"]) == 3
    rows = _read_csv(run / "iterate.csv")
    assert [r["round"] for r in rows] == ["1", "2"]
    for k in (1, 2):
        r = run / f"round{k}"
        played = [load_episode(p) for p in list_episodes(r / "rollouts")]
        assert [int(e["seed"]) for e in played] == [k * 10_000_000 + i for i in range(2)]
        c = json.loads((r / "controller" / "config.json").read_text())["controller"]
        start = run / "controller" if k == 1 else run / "round2" / "c_refit"
        assert c["init_from"] == str(start / "best.msgpack")
        assert c["action_map"] == "squash" and c["dream"]
        # exploit_share 0.5: episode 0 is the kept C's, episode 1 the previous search's favourite's.
        assert float(rows[k - 1]["agent_return_kept"]) == pytest.approx(float(played[0]["reward"].sum()), abs=0.06)
        assert float(rows[k - 1]["agent_return_favourite"]) == pytest.approx(float(played[1]["reward"].sum()),
                                                                                abs=0.06)
        for key in ("eval_mean_gas", "eval_saturated_steer", "eval_tiles", "eval_lap", "wall_s"):
            assert rows[k - 1][key] != ""
        # The per-round table's measurements: M before and after on the agent's own held-out
        # episodes, V on them, and C's dream score beside its real one.
        d = json.loads((r / "diagnostics.json").read_text())
        for key in ("m_before_z_nll_own", "m_after_z_nll_own", "m_after_z_nll_random", "v_error_own",
                    "c_dream_mean", "c_real_mean"):
            assert np.isfinite(d[key]), key
        assert d["c_real_mean"] == pytest.approx(float(rows[k - 1]["eval_mean"]), abs=0.06)
    table = (run / "iterate.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 |") and table[3].startswith("| 2 |")
    pipeline.iterate.main([*argv, "--all"])  # both finished: nothing more
    assert len(_read_csv(run / "iterate.csv")) == 2
    (run / "round2" / "diagnostics.json").unlink()  # rebuilt on demand, the table printed
    pipeline.iterate.main([*argv, "--round", "2", "--table", "--diagnose"])
    assert json.loads((run / "round2" / "diagnostics.json").read_text())["round"] == 2
    with pytest.raises(DataError, match="has not been scored"):
        pipeline.iterate.main([*argv, "--round", "3", "--table", "--diagnose"])


def _read_csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_iterate_csv_takes_new_columns(tmp_path):
    """A round whose row has a column the earlier rounds lack rewrites RUN/iterate.csv with every
    column, the earlier rows kept (empty in the new one)."""
    from worldmodels.iterate import append_row

    path = tmp_path / "iterate.csv"
    append_row(path, {"round": 1, "eval_mean": 784.3})
    append_row(path, {"round": 2, "agent_return_favourite": -51.0, "eval_mean": 790.0})
    rows = _read_csv(path)
    assert list(rows[0]) == ["round", "eval_mean", "agent_return_favourite"]
    assert rows[0] == {"round": "1", "eval_mean": "784.3", "agent_return_favourite": ""}
    assert rows[1] == {"round": "2", "eval_mean": "790.0", "agent_return_favourite": "-51.0"}
