"""The public API: load_agent / load_world_model, the batch-invariant agent step, the dream as a
gymnasium env, and the package's import layering."""

from __future__ import annotations

import ast
import csv
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tests.conftest import ROOT, run_stage


def _scores(path: Path) -> list[tuple[str, str, str]]:
    with open(path) as f:
        return [(r["seed"], r["return"], r["steps"]) for r in csv.DictReader(f)]


def test_agent_step_is_batch_invariant(tiny_world):
    """A row's action and next state depend on its own inputs only: not on the number of envs
    stepped together, nor on which others are in its block."""
    from worldmodels.agent import AGENT_BATCH, make_agent_step
    from worldmodels.config import get_config
    from worldmodels.world_model import load_world_model

    world = load_world_model(tiny_world, get_config("tiny"))
    step = make_agent_step(world)
    rng = np.random.default_rng(0)
    n = AGENT_BATCH + 3
    ctrl = {k: np.stack([rng.normal(size=np.shape(v)).astype(np.float32) for _ in range(n)])
            for k, v in world.controller_template().items()}
    frames = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    h, c = (0.1 * rng.normal(size=(n, world.hidden)).astype(np.float32) for _ in range(2))
    together = step(ctrl, frames, h, c)
    for i in (0, 4, n - 1):
        alone = step({k: v[i:i + 1] for k, v in ctrl.items()}, frames[i:i + 1], h[i:i + 1], c[i:i + 1])
        for a, b in zip(together, alone, strict=True):
            np.testing.assert_array_equal(a[i], b[0])
    order = rng.permutation(n)
    shuffled = step({k: v[order] for k, v in ctrl.items()}, frames[order], h[order], c[order])
    for a, b in zip(together, shuffled, strict=True):
        np.testing.assert_array_equal(a[order], b)


@pytest.fixture(scope="module")
def tiny_agent(reference_controller, tmp_path_factory) -> Path:
    """The session's trained tiny run, exported as an agent (float16 V and M, dream.npz)."""
    agent = tmp_path_factory.mktemp("api") / "tiny-agent"
    run_stage("export_agent", "--config", "tiny", "--run", str(reference_controller), "--agent", str(agent))
    return agent


def test_api_loop_matches_make_evaluate(tiny_agent, tmp_path):
    """The README's loop over gymnasium's own CarRacing-v3 gives make evaluate's returns, episode
    by episode; make evaluate gives the same scores.csv with 1 and 2 workers; the vector form
    over gym.make_vec(num_envs=4) gives the same returns again."""
    from worldmodels import load_agent

    episodes, seed = 4, 913377
    out = {}
    for workers in (1, 2):
        out[workers] = tmp_path / f"w{workers}"
        run_stage("evaluate", "--config", "tiny", "--agent", str(tiny_agent), "--out", str(out[workers]),
                  "--eval.episodes", str(episodes), "--eval.seed", str(seed), "--eval.videos", "false",
                  "--workers", str(workers))
    assert _scores(out[1] / "scores.csv") == _scores(out[2] / "scores.csv")
    assert (out[1] / "scores.csv").read_text() == (out[2] / "scores.csv").read_text()  # driving columns too
    with (out[1] / "scores.csv").open() as f:  # how each episode drove
        rows = list(csv.DictReader(f))
    for row in rows:
        assert -1 <= float(row["mean_steer"]) <= 1 and 0 <= float(row["mean_gas"]) <= 1
        assert 0 <= float(row["mean_brake"]) <= 1 and 0 <= float(row["saturated_steer"]) <= 1
        assert 0 <= float(row["tiles"]) <= 1 and row["lap"] in ("0.0000", "1.0000")
    driving = json.loads((out[1] / "summary.json").read_text())["driving"]
    assert driving["mean_gas"] == pytest.approx(np.mean([float(r["mean_gas"]) for r in rows]), abs=1e-4)
    expected = [float(r) for _, r, _ in _scores(out[1] / "scores.csv")]
    cap = json.loads((out[1] / "summary.json").read_text())["max_steps"]

    agent = load_agent(tiny_agent)
    assert agent.env_id == "CarRacing-v3"
    returns = []
    for i in range(episodes):
        env = gym.make(agent.env_id, max_episode_steps=cap)
        obs, _ = env.reset(seed=seed + i)
        agent.reset()
        total = 0.0
        while True:
            obs, r, term, trunc, _ = env.step(agent.act(obs))
            total += r
            if term or trunc:
                break
        env.close()
        returns.append(total)
    assert [f"{r:.3f}" for r in returns] == [f"{r:.3f}" for r in expected]

    envs = gym.make_vec(agent.env_id, num_envs=4, vectorization_mode="sync", max_episode_steps=cap)
    obs, _ = envs.reset(seed=[seed + i for i in range(4)])
    agent.reset(4)
    totals, alive = np.zeros(4), np.ones(4, bool)
    while alive.any():
        obs, r, term, trunc, _ = envs.step(agent.act(obs))
        totals += np.where(alive, r, 0.0)
        alive &= ~(term | trunc)
    envs.close()
    assert [f"{r:.3f}" for r in totals] == [f"{r:.3f}" for r in expected]
    agent.reset(np.array([True, False, False, False]))  # one member only: the others keep their state


def test_load_agent_and_act_refuse_bad_input(tiny_agent, tiny_world, tmp_path):
    from worldmodels import load_agent
    from worldmodels.errors import CheckpointError, ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        load_agent(tmp_path / "missing")
    no_c = tmp_path / "no-controller"
    for part in ("vision", "mdnrnn"):
        shutil.copytree(tiny_agent / part, no_c / part)
    shutil.copy(tiny_agent / "config.json", no_c / "config.json")
    with pytest.raises(CheckpointError, match="no controller.*make train-controller"):
        load_agent(no_c)
    future = tmp_path / "future"
    shutil.copytree(tiny_agent, future)
    info = json.loads((future / "agent.json").read_text())
    (future / "agent.json").write_text(json.dumps({**info, "format": 99}))
    with pytest.raises(ConfigError, match="format 99.*make export-agent"):
        load_agent(future)
    agent = load_agent(tiny_agent)
    with pytest.raises(ValueError, match=r"\(96, 96, 3\) uint8"):
        agent.act(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        agent.act(np.zeros((96, 96, 3), np.float32))
    agent.reset(2)
    with pytest.raises(ValueError, match="reset"):
        agent.act(np.zeros((3, 96, 96, 3), np.uint8))


def test_world_model_api(tiny_agent):
    import jax

    from worldmodels import load_world_model

    wm = load_world_model(tiny_agent)
    frames = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    z = wm.encode(frames)
    assert z.shape == (3, wm.latent_dim)
    decoded = np.asarray(wm.decode(z))
    assert decoded.shape == (3, 64, 64, 3) and decoded.dtype == np.uint8
    state = wm.initial_state(3)
    state, out = wm.step(state, z, np.zeros((3, wm.action_dim), np.float32))
    assert state.h.shape == (3, wm.hidden)
    z_next = wm.sample(jax.random.key(0), out, z, temperature=1.0)
    assert z_next.shape == z.shape and np.isfinite(np.asarray(z_next)).all()
    with pytest.raises(ValueError, match="frames"):
        wm.encode(np.zeros((3, 32, 32, 3), np.uint8))


def test_dream_start_of_an_agent_without_series(tiny_agent, tmp_path):
    """`export-agent --dream-start N` rewrites an agent's dream.npz from N fresh random episodes
    encoded by its own V; the dream env then starts from them."""
    import worldmodels  # noqa: F401  (registers worldmodels/Dream-v0)
    from worldmodels.errors import DataError
    from worldmodels.world_model import DREAM_FILE, load_dream_start, load_world_model

    agent = tmp_path / "agent"
    shutil.copytree(tiny_agent, agent)
    (agent / DREAM_FILE).unlink()
    with pytest.raises(DataError, match="dream.npz"):
        load_dream_start(agent, load_world_model(agent))
    run_stage("export_agent", "--config", "tiny", "--agent", str(agent), "--dream-start", "3")
    start = load_dream_start(agent, load_world_model(agent))
    assert start.initial_mu.shape == (3, 8) and np.isfinite(start.initial_logvar).all()
    assert start.reward_values[0] <= 0 < start.reward_values[1]
    env = gym.make("worldmodels/Dream-v0", world_model=str(agent), max_steps=5)
    assert env.reset(seed=1)[0].shape == env.observation_space.shape
    env.close()


def test_dream_env_passes_gymnasiums_checker(tiny_agent, tiny_world):
    from gymnasium.utils.env_checker import check_env

    import worldmodels  # noqa: F401  (registers worldmodels/Dream-v0)

    for folder in (tiny_agent, tiny_world):  # an agent's dream.npz, a run's series
        env = gym.make("worldmodels/Dream-v0", world_model=str(folder), temperature=1.2, max_steps=20,
                       render_mode="rgb_array")
        check_env(env.unwrapped, skip_render_check=False)
        obs, _ = env.reset(seed=3)
        first = np.asarray(env.render())
        assert first.shape == (64, 64, 3) and first.dtype == np.uint8
        steps, truncated = 0, False
        while True:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            assert 0.0 <= info["p_done"] <= 1.0 and np.isfinite(reward)
            if terminated or truncated:
                break
        assert steps <= 20 and (terminated or steps == 20)
        again, _ = env.reset(seed=3)
        np.testing.assert_array_equal(again, env.reset(seed=3)[0])
        env.close()


def _package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, functions included)."""
    mods = {}
    for root in ("worldmodels", "pipeline"):
        for path in (ROOT / root).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = path
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    full = f"{base}.{a.name}"
                    edges.add(full if full in mods else base)
        graph[name] = {e for e in edges if e in mods and e != name}
    return graph


def test_imports_point_down():
    """No import circle among the package's modules; training imports nothing from rollouts."""
    graph = _package_imports()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    for module, imported in graph.items():
        if module.startswith("worldmodels.train"):
            assert not {m for m in imported if m.startswith("worldmodels.rollout")}, module
        if module.startswith("worldmodels"):  # the library holds the work; pipeline/ only parses and calls
            assert not {m for m in imported if m.startswith("pipeline")}, module
        if module.startswith("pipeline") and module != "pipeline._cli":
            assert not {m for m in imported if m.startswith("pipeline") and m != "pipeline._cli"}, module
        if module.startswith(("worldmodels.models", "worldmodels.data", "worldmodels.world_model")):
            upward = {m for m in imported if m.startswith(("worldmodels.train", "worldmodels.rollout",
                                                           "worldmodels.agent", "pipeline"))}
            assert not upward, (module, upward)
