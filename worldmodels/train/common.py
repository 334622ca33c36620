"""What the training loops share: metrics.csv; the train state, compile options and device
meshes live lower (`worldmodels.models.train_state`, `models.vision.layers`, `runtime`) and
are re-exported here for the loops."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from worldmodels.data.atomic import atomic_write_text
from worldmodels.models.train_state import TrainState, init_train_state
from worldmodels.models.vision.layers import conv_compiler_options
from worldmodels.runtime import data_parallel

__all__ = ["MetricsLog", "TrainState", "conv_compiler_options", "data_parallel", "init_train_state"]


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
