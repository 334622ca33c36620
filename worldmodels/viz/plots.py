"""Training curves and histograms with matplotlib (Agg backend, files only)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

from worldmodels.data.atomic import atomic_write_bytes


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> None:
    """Lay out, write as PNG atomically, and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_histogram(path: str | os.PathLike, values, title: str, xlabel: str,
                   marks: dict[str, float] | None = None) -> None:
    """A histogram with its mean and optional named vertical marks; saved as PNG."""
    import numpy as np

    plt = _figure()
    values = np.asarray(values)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:blue", alpha=0.8)
    ax.axvline(values.mean(), color="k", ls="--", label=f"mean {values.mean():.1f}")
    for label, x in (marks or {}).items():
        ax.axvline(x, color="tab:green", ls=":", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=9)
    ax.legend()
    save_figure(fig, path)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a metrics CSV as numbers (integers stay integers, so a resumed log that
    rewrites its kept rows writes them as they were); empty cells are left out."""
    with open(path) as f:
        return [{k: _number(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_curves(path: str | os.PathLike, rows: Sequence[dict[str, float]], x: str,
                panels: Sequence[Sequence[str]], title: str = "", log_y: Sequence[bool] = ()) -> None:
    """One panel per group of columns, plotted against column `x`; saved as PNG."""
    plt = _figure()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for k, (ax, columns) in enumerate(zip(axes[0], panels, strict=True)):
        for column in columns:
            points = [(r[x], r[column]) for r in rows if column in r and x in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=column)
        ax.set_xlabel(x)
        if k < len(log_y) and log_y[k]:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_series(path: str | os.PathLike, lines: dict[str, Sequence[float]], xlabel: str = "",
                title: str = "") -> None:
    """Several named lines over a shared index; saved as PNG."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, values in lines.items():
        ax.plot(values, label=name, lw=1.2)
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    save_figure(fig, path)
