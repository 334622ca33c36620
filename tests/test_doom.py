"""DoomTakeCover: the env module against the real vizdoom game, the dream's early exit, M's
end windows, and the whole doom-tiny pipeline (controller trained only in the dream) with the
temperature sweep, through the stage entries."""

import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT
from worldmodels.envs import get_env_module
from worldmodels.errors import DataError
from worldmodels.viz.plots import read_csv

ENV_ID = "VizdoomTakeCover-v1"


@pytest.fixture(scope="module")
def doom():
    return get_env_module("doom")


def play(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
        assert not (terminated or truncated)
    return np.stack(frames), rewards


def test_env_frames_and_actions_match_the_game(doom, tmp_path):
    import gymnasium
    import vizdoom

    env = doom.make_env(ENV_ID)
    raw = gymnasium.make(ENV_ID)  # vizdoom's own env, for reference
    raw.unwrapped.game.set_doom_config_path(str(tmp_path / "_vizdoom.ini"))
    try:
        assert env.action_space.shape == (doom.ACTION_DIM,) == (1,)
        obs, _ = env.reset(seed=3)
        assert obs.shape == (240, 320, 3) and obs.dtype == np.uint8
        frame = doom.preprocess_frame(obs, 64)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
        with pytest.raises(ValueError, match="VizDoom screen"):
            doom.preprocess_frame(obs[:200], 64)

        # Which Discrete(3) index presses which button, read from vizdoom itself.
        buttons = raw.unwrapped.game.get_available_buttons()
        pressed = {i: [b for b, on in zip(buttons, raw.unwrapped.button_map[i], strict=True) if on]
                   for i in range(raw.action_space.n)}
        index = {-1: next(i for i, p in pressed.items() if p == [vizdoom.Button.MOVE_LEFT]),
                 0: next(i for i, p in pressed.items() if not p),
                 1: next(i for i, p in pressed.items() if p == [vizdoom.Button.MOVE_RIGHT])}
        seen = {}
        for a in (-1, 0, 1):
            ours, rewards = play(env, 11, [np.array([0.9 * a], np.float32)] * 12)
            theirs = np.stack([raw.reset(seed=11)[0]["screen"]] + [raw.step(index[a])[0]["screen"]
                                                                   for _ in range(12)])
            np.testing.assert_array_equal(ours, theirs)  # same seed, same button: same game
            assert rewards == [1.0] * 12  # +1 per tic alive
            seen[a] = ours[-1]
        assert not np.array_equal(seen[-1], seen[1]) and not np.array_equal(seen[-1], seen[0])
        settings = env.settings_path
        assert settings and not settings.startswith(str(ROOT))
    finally:
        env.close()
        raw.close()
    assert not (ROOT / "_vizdoom.ini").exists()  # the engine's settings file stays out of the repo
    assert not os.path.exists(settings)  # nor is one left behind in the temp dir per env made


def test_action_mapping(doom):
    a = np.array([-1.0, -0.34, -0.33, 0.0, 0.33, 0.34, 1.0], np.float32)
    np.testing.assert_array_equal(doom.rollout_action(a), [-1, -1, 0, 0, 0, 1, 1])
    uniform = doom.rollout_action(np.random.default_rng(0).uniform(-1, 1, 30000))
    np.testing.assert_allclose([np.mean(uniform == v) for v in (-1, 0, 1)], 1 / 3, atol=0.02)
    y = jnp.linspace(-3, 3, 601)[:, None]
    np.testing.assert_array_equal(np.asarray(doom.squash_action(y)), doom.rollout_action(np.tanh(np.asarray(y))))


def test_dream_early_exit_equals_full_scan():
    from jax.flatten_util import ravel_pytree

    from worldmodels.envs.dream import DreamEnv, DreamParams, dream_rollout
    from worldmodels.models.controller import controller_features, controller_output, init_controller
    from worldmodels.models.mdnrnn import MDNRNN

    module = MDNRNN(latent_dim=4, action_dim=1, hidden=8, mixtures=2, reward_head="none", done_head=True)
    params = module.init(jax.random.key(0), jnp.zeros((1, 1, module.input_dim)))["params"]
    kernel = params["head"]["kernel"]  # episodes that end at varied times: done logit ~ -2 + N(0, 2)
    params["head"]["kernel"] = kernel.at[:, -1].multiply(10.0)
    params["head"]["bias"] = params["head"]["bias"].at[-1].set(-2.0)
    env = DreamEnv(module)
    dream = DreamParams(rnn=params, initial_mu=jnp.zeros((3, 4)), initial_logvar=jnp.zeros((3, 4)),
                        temperature=jnp.asarray(1.15), reward_values=jnp.zeros(2),
                        constant_reward=jnp.asarray(1.0), max_steps=60)
    flat, unravel = ravel_pytree(init_controller(jax.random.key(1), 4 + 16, 1))
    doom = get_env_module("doom")
    policy = lambda f, obs: doom.squash_action(controller_output(unravel(f), controller_features(obs, "zch")))
    keys = jax.random.split(jax.random.key(2), 32)
    run = lambda chunk: jax.jit(jax.vmap(lambda k: dream_rollout(env, dream, policy, flat, k, 60, chunk)))(keys)
    (full, full_t), (early, early_t) = run(0), run(10)
    np.testing.assert_array_equal(full_t, early_t)
    np.testing.assert_allclose(full, early, rtol=1e-6)
    np.testing.assert_array_equal(full, full_t)  # 1 per step survived
    t = np.asarray(full_t)
    assert (t < 10).any() and ((t > 10) & (t < 60)).any(), t  # ends inside and past the first chunk


def test_sampled_dream_done_ends_at_m_rate():
    """controller.dream_done 'sample': with P(done) = 0.05 at every step, episode lengths are
    geometric (mean (1 - 0.95^200) / 0.05 = 20.0 under a 200-step cap); the threshold dream
    (P > 0.5) never ends before the cap."""
    from worldmodels.envs.dream import DreamEnv, DreamParams, dream_rollout
    from worldmodels.models.mdnrnn import MDNRNN

    module = MDNRNN(latent_dim=4, action_dim=1, hidden=8, mixtures=2, reward_head="none", done_head=True)
    params = module.init(jax.random.key(0), jnp.zeros((1, 1, module.input_dim)))["params"]
    params["head"]["kernel"] = params["head"]["kernel"].at[:, -1].set(0.0)
    params["head"]["bias"] = params["head"]["bias"].at[-1].set(np.log(0.05 / 0.95))
    env = DreamEnv(module)
    keys = jax.random.split(jax.random.key(3), 1024)
    lengths = {}
    for sample in (False, True):
        dream = DreamParams(rnn=params, initial_mu=jnp.zeros((3, 4)), initial_logvar=jnp.zeros((3, 4)),
                            temperature=jnp.asarray(1.15), reward_values=jnp.zeros(2),
                            constant_reward=jnp.asarray(1.0), max_steps=200, done_sample=sample)
        one = lambda k, d=dream: dream_rollout(env, d, lambda f, obs: jnp.zeros(1), None, k, 200, 20)
        lengths[sample] = np.asarray(jax.jit(jax.vmap(one))(keys)[1])
    assert (lengths[False] == 200).all()
    assert abs(lengths[True].mean() - 20.0) < 2.0 and lengths[True].min() >= 1, lengths[True].mean()
    # done_scale 2: P(death) 0.1 a step, mean length (1 - 0.9^200) / 0.1 = 10.0
    dream = dream.replace(done_scale=jnp.asarray(2.0))
    harder = np.asarray(jax.jit(jax.vmap(lambda k: dream_rollout(env, dream, lambda f, obs: jnp.zeros(1), None,
                                                                 k, 200, 20)))(keys)[1])
    assert abs(harder.mean() - 10.0) < 1.0, harder.mean()
    # with the threshold rule, 0.05 * 11 = 0.55 > 0.5: every episode ends at its first step
    dream = dream.replace(done_scale=jnp.asarray(11.0), done_sample=False)
    first = np.asarray(jax.jit(jax.vmap(lambda k: dream_rollout(env, dream, lambda f, obs: jnp.zeros(1), None,
                                                                k, 200, 20)))(keys)[1])
    assert (first == 1).all()


def test_end_windows():
    from worldmodels.train.mdnrnn import SeriesData

    lengths = [6, 9, 3, 7]  # episode 2 was cut by the time limit (no done), episode 3 is too short
    done = np.concatenate([np.eye(1, n, n - 1)[0] for n in lengths])
    done[6 + 9 - 1] = 0.0
    n = sum(lengths)
    data = SeriesData(mu=np.zeros((n, 2)), logvar=np.zeros((n, 2)), action=np.zeros((n, 1)), reward=np.ones(n),
                      done=done, episode_start=np.zeros(n), episode_end=np.zeros(n), lengths=np.array(lengths))
    np.testing.assert_array_equal(data.end_window_starts(4), [6 - 4, 6 + 9 + 3 + 7 - 4])
    for s in data.end_window_starts(4):
        assert done[s + 3] == 1.0


@pytest.mark.filterwarnings("ignore:os.fork")  # `make -n` forks; it execs at once
def test_doom_tiny_pipeline_and_temperature_sweep(tmp_path, ray_local):
    """`make all CONFIG=doom-tiny`: every stage's entry in order, in this process."""
    import pipeline.evaluate
    import pipeline.report
    import pipeline.rollouts
    import pipeline.series
    import pipeline.temperature_sweep
    import pipeline.train_controller
    import pipeline.train_rnn
    import pipeline.train_vae
    from worldmodels.data.episodes import list_episodes, load_episode
    from worldmodels.data.series import list_series, load_series

    make = subprocess.run(["make", "-n", "all", "CONFIG=doom-tiny", "STAMP="], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert "pipeline.temperature_sweep" in make and "--controller.dream" not in make  # the preset decides

    run = str(tmp_path / "doom")
    argv = ["--config", "doom-tiny", "--run", run]
    for stage in (pipeline.rollouts, pipeline.train_vae, pipeline.series, pipeline.train_rnn,
                  pipeline.train_controller, pipeline.evaluate, pipeline.temperature_sweep, pipeline.report):
        stage.main(argv)
    run = tmp_path / "doom"

    episodes = [load_episode(p) for p in list_episodes(run / "rollouts")]
    assert len(episodes) == 4
    actions = np.concatenate([e["action"] for e in episodes])
    assert actions.shape[1] == 1 and set(np.unique(actions)) == {-1.0, 0.0, 1.0}  # what M trains on
    assert all(e["obs"].shape[1:] == (64, 64, 3) and (e["reward"] == 1.0).all() for e in episodes)
    assert any(e["terminated"][-1] for e in episodes)  # random play dies: the done head has targets
    assert all(load_series(p)["action"].shape[1] == 1 for p in list_series(run / "series"))
    m_summary = json.loads((run / "mdnrnn" / "summary.json").read_text())
    assert "heldout_done_recall" in m_summary and "heldout_episode_done_false_rate" in m_summary  # start_windows

    controller = json.loads((run / "controller" / "summary.json").read_text())
    assert controller["dream"] and controller["checks"] == "dream"
    assert json.loads((run / "controller" / "best.json").read_text())["checks"] == "dream"
    assert controller["parameters"] == (8 + 2 * 16) * 1  # [z, c, h] -> one output, no bias (the paper's 1088)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["env_id"] == ENV_ID and summary["episodes"] == 2 and summary["solved_threshold"] == 750.0
    rows = read_csv(run / "eval" / "scores.csv")
    assert all(r["return"] == r["steps"] for r in rows)  # frames survived
    assert (run / "eval" / "best.mp4").exists()
    # scripts/doom_vote.py: a controller voting with itself plays exactly the evaluation's episodes
    from scripts.doom_vote import main as doom_vote

    doom_vote([str(run), str(run), "--out", str(tmp_path / "vote.json"), "--seed", "0", "--episodes", "2"])
    vote = json.loads((tmp_path / "vote.json").read_text())["scores"]
    assert [vote[str(int(r["seed"]))] for r in rows] == [r["return"] for r in rows]

    sweep = json.loads((run / "temperature_sweep" / "results.json").read_text())
    assert [r["temperature"] for r in sweep["rows"]] == [0.5, 1.15]
    table = (run / "temperature_sweep" / "table.md").read_text()
    assert "| 0.5 |" in table and "| 1.15 |" in table and (run / "temperature_sweep" / "temperatures.png").exists()
    own = run / "temperature_sweep" / "tau_0.5"
    assert len(read_csv(own / "controller" / "generations.csv")) == 2
    assert json.loads((own / "config.json").read_text())["controller"]["temperature"] == 0.5
    assert (run / "temperature_sweep" / "tau_1.15" / "controller").is_symlink()  # the run's own tau: reused
    for row, tau in zip(sweep["rows"], ("0.5", "1.15"), strict=True):
        dream = json.loads((run / "temperature_sweep" / f"tau_{tau}" / "dream.json").read_text())
        returns = np.array(dream["returns"])
        assert len(returns) == 4 and ((returns >= 1) & (returns <= 40)).all()
        assert row["dream_mean"] == pytest.approx(returns.mean())
        real = json.loads((run / "temperature_sweep" / f"tau_{tau}" / "eval" / "summary.json").read_text())
        assert row["real_mean"] == real["mean"] and real["episodes"] == 2
    assert "Temperature sweep" in (run / "report.md").read_text()
    pipeline.temperature_sweep.main(argv)  # a rerun finds every tau done: same scores, no new generations
    again = json.loads((run / "temperature_sweep" / "results.json").read_text())
    assert [(r["dream_mean"], r["real_mean"]) for r in again["rows"]] == [(r["dream_mean"], r["real_mean"])
                                                                         for r in sweep["rows"]]
    assert len(read_csv(own / "controller" / "generations.csv")) == 2

    # `make iterate`: the agent plays (exploring), M retrains on old + new series, C again.
    import pipeline.iterate

    pipeline.iterate.main(argv + ["--eval.videos", "false"])
    r1 = run / "round1"
    played = [load_episode(p) for p in list_episodes(r1 / "rollouts")]
    assert len(played) == 3 and all(str(e["policy"]) == "agent" for e in played)
    assert [int(e["seed"]) for e in played] == [10_000_000 + i for i in range(3)]  # not the eval seeds
    assert set(np.unique(np.concatenate([e["action"] for e in played]))) <= {-1.0, 0.0, 1.0}
    assert len(list_series(r1 / "series")) == 3 and (r1 / "vision").is_symlink()
    m1 = json.loads((r1 / "mdnrnn" / "summary.json").read_text())
    assert m1["steps"] == 4 and m1["train_episodes"] + m1["heldout_episodes"] == 4 + 3  # old + new data
    assert (r1 / "mdnrnn" / "dream_strip.png").exists()  # from a held-out episode of RUN/series
    assert json.loads((r1 / "mdnrnn" / "config.json").read_text())["mdnrnn"]["init_from"].endswith(
        "doom/mdnrnn/params.msgpack")
    assert json.loads((r1 / "eval" / "summary.json").read_text())["episodes"] == 2
    (row,) = read_csv(run / "iterate.csv")
    assert row["round"] == 1 and row["train_episodes_m"] == m1["train_episodes"]
    pipeline.report.main(argv)
    assert "| 1 | 3 |" in (run / "report.md").read_text()  # the round's row
    with pytest.raises(DataError, match="round2, which has no controller"):
        pipeline.iterate.main(argv + ["--round", "3"])  # round 2 does not exist yet: nothing starts

    # `make export-agent` then `make evaluate AGENT=...` on the shipped form (V and M in float16).
    import pipeline.export_agent

    agent = tmp_path / "agents" / "doom"
    pipeline.export_agent.main(argv + ["--agent", str(agent)])
    pipeline.evaluate.main(["--config", "doom-tiny", "--agent", str(agent), "--out", str(tmp_path / "agent_eval"),
                            "--eval.episodes", "1", "--eval.videos", "false", "--eval.max_steps", "30"])
    shipped = json.loads((tmp_path / "agent_eval" / "summary.json").read_text())
    assert shipped["env_id"] == ENV_ID and shipped["episodes"] == 1 and 1 <= shipped["mean"] <= 30
    assert shipped["max_steps"] == 30  # given on the command line: overrides the agent's own cap
