"""What the training loops share: the train state, metrics.csv, device meshes."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodels.data.atomic import atomic_write_text


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def init_train_state(init_fn, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Parameters from `init_fn(key)`, jitted (one compile instead of one per initializer)."""
    params = jax.jit(init_fn)(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params))


def conv_compiler_options() -> dict[str, str]:
    """Per-computation XLA options for jits that run V's convolutions: on CPU, keep YNNPACK for
    dots and reductions but leave convolutions to Eigen (1.5-7x faster for V's shapes)."""
    if jax.default_backend() != "cpu":
        return {}
    from worldmodels.models.vision.layers import CPU_COMPILER_OPTIONS

    return dict(CPU_COMPILER_OPTIONS)


def data_parallel(n_devices: int, batch_size: int):
    """(mesh, batch sharding, replicated sharding) over the first usable host devices: the
    most devices (at most `n_devices`, 0 = all) that divide the batch."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()[: max(1, n_devices or len(jax.devices()))]
    while len(devices) > 1 and batch_size % len(devices):
        devices = devices[:-1]
    mesh = Mesh(np.array(devices), ("data",))
    return mesh, NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


class MetricsLog:
    """Rows of training metrics, rewritten atomically to CSV with each checkpoint, so the
    file always matches the checkpoint (a resumed run drops rows past its step)."""

    def __init__(self, path: Path, columns: Sequence[str], resume_step: int, key: str = "step"):
        self.path, self.columns = Path(path), tuple(columns)
        self.rows: list[dict[str, float]] = []
        if self.path.exists():
            from worldmodels.viz.plots import read_csv

            self.rows = [r for r in read_csv(self.path) if r.get(key, 0) <= resume_step]

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)

    def write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())
