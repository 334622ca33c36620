"""Packing a trained run into a self-contained agent directory (what `agents/carracing` is).

An agent directory holds exactly what acting needs: config.json (the run's whole resolved
config), vision/params.msgpack, mdnrnn/params.msgpack, controller/best.msgpack, dream.npz
(where M's dreams start and what they pay, from the run's series: for the dream env and
`make play`) and agent.json (its format, where it came from, what it scored in training). V and M may be stored as
float16 (half the size); loading casts them back to float32, so the agent computes in
float32 as it did in training.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from worldmodels.checkpoint import cast_checkpoint
from worldmodels.data.atomic import atomic_write_text
from worldmodels.errors import ConfigError, DataError

PARTS = ("vision/params.msgpack", "mdnrnn/params.msgpack", "controller/best.msgpack")


def export_agent(run: str | Path, dest: str | Path, dtype: str = "float16", force: bool = False) -> dict:
    """Copy RUN's V, M, best C and config into `dest`; returns the agent.json it wrote."""
    from worldmodels.agent import AGENT_FORMAT, load_controller
    from worldmodels.world_model import (
        DREAM_FILE,
        load_agent_config,
        load_world_model,
        save_dream_start,
        series_dream_start,
    )

    run, dest = Path(run), Path(dest)
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype '{dtype}' is not supported; valid: float16, float32")
    if dest.resolve() == run.resolve():
        raise ConfigError(f"the agent must go to a new directory, not the run itself ({run}); e.g. "
                          "AGENT=agents/carracing")
    missing = [p for p in PARTS if not (run / p).exists()]
    if missing:
        raise DataError(f"{run} is not a finished run: missing {', '.join(missing)}; "
                        "run the stages up to `make train-controller` first")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise DataError(f"{dest} already holds an agent; pass --force to replace it (nothing was written)")
    config = load_agent_config(run)
    world = load_world_model(run, config)
    load_controller(run, world)  # the parts must fit together
    start = series_dream_start(run / "series", world.module.reward_head)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for part in PARTS:
        (staging / part).parent.mkdir(parents=True, exist_ok=True)
        if part.startswith("controller"):
            shutil.copyfile(run / part, staging / part)  # 867 numbers: keep them exact
        else:
            cast_checkpoint(run / part, staging / part, dtype)
    atomic_write_text(staging / "config.json", config.to_json())
    save_dream_start(staging / DREAM_FILE, start)
    info = {"format": AGENT_FORMAT, "exported_from": str(run), "exported": time.strftime("%Y-%m-%d %H:%M:%S"),
            "dtype": dtype,
            "controller": _read_json(run / "controller" / "best.json"),
            "controller_summary": _read_json(run / "controller" / "summary.json")}
    atomic_write_text(staging / "agent.json", json.dumps(info, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return info


DREAM_START_SEED = 30_000_000
"""Env seeds of the random episodes `write_dream_start` records: apart from the rollouts (0..),
the evaluation (0..), the checks (2,000,000..), the iterate rounds (10,000,000 * k..) and
the seeds selection may use (10,000..)."""


def write_dream_start(agent: str | Path, episodes: int = 32, seed: int = DREAM_START_SEED) -> dict:
    """(Re)write an agent's dream.npz from `episodes` fresh random-policy episodes of its env
    (its own preset's rollout policy), encoded by its own V: for agents exported before dream.npz
    existed, or whose run's series are gone. Returns a summary of what it wrote."""
    import dataclasses
    import tempfile

    from worldmodels.rollout.collect import collect_rollouts
    from worldmodels.world_model import DREAM_FILE, encode_run, load_agent_config, save_dream_start, series_dream_start

    agent = Path(agent)
    if episodes < 1:
        raise ConfigError(f"--dream-start {episodes}: must be >= 1 episodes")
    config = load_agent_config(agent)
    if not (agent / "vision" / "params.msgpack").exists():
        raise DataError(f"{agent} has no vision/params.msgpack: not an agent or run dir with V")
    config = dataclasses.replace(config, rollouts=dataclasses.replace(config.rollouts, episodes=episodes, seed=seed))
    with tempfile.TemporaryDirectory(prefix="dream-start-") as tmp:
        run = Path(tmp)
        collect_rollouts(config, run / "rollouts")  # Ray first, before JAX starts its threads
        encode_run(config, run, agent / "vision")
        start = series_dream_start(run / "series", config.mdnrnn.reward_head)
    save_dream_start(agent / DREAM_FILE, start)
    return {"episodes": episodes, "seeds": f"{seed}-{seed + episodes - 1}", "policy": config.rollouts.policy,
            "reward_values": [round(float(v), 4) for v in start.reward_values],
            "death_reward": start.death_reward}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
