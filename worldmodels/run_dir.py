"""The run directory: one folder per stage, each with the resolved config that made it.

A rerun with the same config continues a stage; a rerun whose config differs in a field
that would change what is already on disk is refused, naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from worldmodels.config import Config, diff_configs
from worldmodels.data.atomic import atomic_write_text
from worldmodels.errors import ConfigError, WorldModelsError

FREE_FIELDS: dict[str, tuple[str, ...]] = {
    "vision": ("vision.epochs", "vision.max_steps", "vision.devices", "vision.layers",
               "vision.chunk_frames", "vision.checkpoint_every", "vision.log_every"),
    "mdnrnn": ("mdnrnn.steps", "mdnrnn.checkpoint_every", "mdnrnn.log_every", "mdnrnn.temperature",
               "mdnrnn.eval_every", "mdnrnn.eval_windows", "mdnrnn.done_refit_steps", "mdnrnn.done_refit_l2"),
    "controller": ("controller.generations", "controller.eval_every", "controller.eval_episodes",
                   "controller.check_start",
                   "controller.workers", "controller.episode_timeout"),
}
"""Per stage folder, the fields a rerun may change (how long, how often, on what hardware):
the rest must match what the folder was made with."""


def prepare_stage_dir(run: str | os.PathLike, stage: str, config: Config,
                      sections: tuple[str, ...], free_fields: tuple[str, ...] = ()) -> Path:
    """Create `run/stage`, refuse a saved config that differs in `sections` (except the
    dotted `free_fields`, which may change between runs) once the folder holds anything else,
    and save the resolved config."""
    folder = Path(run) / stage
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise WorldModelsError(
            f"cannot write to run dir {folder} ({exc.strerror}); pick a writable RUN="
        ) from None
    saved_path = folder / "config.json"
    # A saved config with nothing beside it made nothing yet (e.g. its run stopped at a bad value
    # before any work): the new config replaces it instead of being refused.
    if saved_path.exists() and any(p.name != "config.json" for p in folder.iterdir()):
        try:
            saved = Config.from_dict(json.loads(saved_path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(
                f"{saved_path} is not a valid config ({exc}); delete it to start over"
            ) from None
        for section in sections:
            for name, old, new in diff_configs(getattr(saved, section), getattr(config, section),
                                               prefix=f"{section}."):
                if name not in free_fields:
                    raise ConfigError(
                        f"{folder} was made with {name}={old!r}, now {new!r}; use another RUN= "
                        f"or pass --{name} {old}"
                    )
    atomic_write_text(saved_path, config.to_json())
    return folder
