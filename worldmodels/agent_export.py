"""Packing a trained run into a self-contained agent directory (what `agents/carracing` is).

An agent directory holds exactly what acting needs: config.json (the run's whole resolved
config), vision/params.msgpack, mdnrnn/params.msgpack, controller/best.msgpack, and
agent.json (where it came from and what it scored in training). V and M may be stored as
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
    from worldmodels.rollout.agent import load_agent_config, load_controller, load_world_model

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
    load_controller(run, load_world_model(run, config))  # the parts must fit together
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for part in PARTS:
        (staging / part).parent.mkdir(parents=True, exist_ok=True)
        if part.startswith("controller"):
            shutil.copyfile(run / part, staging / part)  # 867 numbers: keep them exact
        else:
            cast_checkpoint(run / part, staging / part, dtype)
    atomic_write_text(staging / "config.json", config.to_json())
    info = {"exported_from": str(run), "exported": time.strftime("%Y-%m-%d %H:%M:%S"), "dtype": dtype,
            "controller": _read_json(run / "controller" / "best.json"),
            "controller_summary": _read_json(run / "controller" / "summary.json")}
    atomic_write_text(staging / "agent.json", json.dumps(info, indent=2))
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return info


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
