"""Checkpoints: Flax msgpack serialization (never pickle), written atomically.

One file holds the state tree and a JSON `meta` dict (step, epoch, the config section that
fixes the architecture), so a checkpoint can be checked against the config before it is
restored into a tree of the expected structure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flax import serialization

from worldmodels.data.atomic import atomic_write_bytes
from worldmodels.errors import CheckpointError


def save_checkpoint(path: str | os.PathLike, tree: Any, meta: dict[str, Any]) -> None:
    payload = {"state": serialization.to_state_dict(tree), "meta": json.dumps(meta, sort_keys=True)}
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    return _read(path)[1]


def load_checkpoint(path: str | os.PathLike, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restore `path` into a tree shaped like `target`; returns (tree, meta). Leaves take the
    target's dtype, so a float16 export (a shipped agent) computes in float32 like training."""
    import jax
    import numpy as np

    state, meta = _read(path)
    try:
        tree = serialization.from_state_dict(target, state)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({exc}); "
                              "it was made with another architecture") from None
    _check_shapes(target, tree, path)
    cast = lambda t, a: np.asarray(a, t.dtype) if hasattr(t, "dtype") and hasattr(a, "dtype") else a
    return jax.tree.map(cast, target, tree), meta


def cast_checkpoint(source: str | os.PathLike, dest: str | os.PathLike, dtype: str) -> None:
    """Copy a checkpoint, storing its floating-point arrays as `dtype` (meta kept)."""
    import numpy as np

    state, meta = _read(source)

    def cast(node):
        if isinstance(node, dict):
            return {k: cast(v) for k, v in node.items()}
        if isinstance(node, np.ndarray) and np.issubdtype(node.dtype, np.floating):
            return node.astype(dtype)
        return node

    payload = {"state": cast(state), "meta": json.dumps(meta, sort_keys=True)}
    atomic_write_bytes(dest, serialization.msgpack_serialize(payload))


def _read(path: str | os.PathLike) -> tuple[dict, dict]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train that stage first")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        return payload["state"], json.loads(payload["meta"])
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(exc).__name__}); "
                              "delete it to retrain") from None


def _check_shapes(target: Any, tree: Any, path) -> None:
    import jax

    for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(tree),
                             strict=True):
        if getattr(a, "shape", None) != getattr(b, "shape", None):
            name = jax.tree_util.keystr(where)
            raise CheckpointError(f"checkpoint {path} has {name} of shape {b.shape}, this model "
                                  f"expects {a.shape}: it was made with another architecture")
