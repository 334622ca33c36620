"""VAE pictures (SEEDS.md section 5): a 2-d latent scatter coloured by class, test inputs over
their reconstructions, latent arithmetic and morphing.

Two VAEs ('beta-vae', BCE, the knowledge-sharing experiment's layers) are trained on every
training image: one with a 2-d latent for the scatter, one with `sharing.latent_dim` for the
rest. Latent arithmetic follows the book's attribute vectors: the attribute is "heavy strokes",
its vector the mean z of the most-inked quarter of the training images minus that of the
least-inked quarter, added with weights -2..2 to test images. Morphing decodes the straight
line between the latent means of two test images of different classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from worldmodels.config import SharingConfig
from worldmodels.data.atomic import atomic_write_text
from worldmodels.experiments.common import GenerativeTrainer
from worldmodels.experiments.data import Dataset, load_dataset
from worldmodels.models.vision.generative import build_generative

ATTRIBUTE_WEIGHTS = (-2.0, -1.0, 0.0, 1.0, 2.0)
MORPH_STEPS = 10


def _rgb(x: np.ndarray) -> np.ndarray:
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _train_vae(cfg: SharingConfig, data: Dataset, latent_dim: int, seed: int):
    from dataclasses import replace

    from worldmodels.experiments.knowledge_sharing import vision_config

    vcfg = replace(vision_config(cfg), latent_dim=latent_dim)
    trainer = GenerativeTrainer(build_generative("beta-vae", vcfg, data.image_shape), cfg.batch_size)
    state = trainer.model.init_state(jax.random.key(seed))
    state, metrics = trainer.fit(state, data.x_train, 2 * cfg.vae_epochs, np.random.default_rng(seed),
                                 jax.random.key(seed + 1))
    return trainer, state.params, metrics


def make_vae_pictures(cfg: SharingConfig, out: str | Path, data: Dataset | None = None) -> dict:
    """Write latent_2d.png, reconstructions.png, arithmetic.png, morphing.png, summary.json."""
    from worldmodels.viz.images import image_grid, save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or load_dataset(cfg.data, cfg.image_size)
    scale = max(1, 48 // data.image_shape[0])
    summary = {"data": data.name}

    vae2, params2, metrics2 = _train_vae(cfg, data, 2, cfg.seed)
    mu = vae2.encode(params2, data.x_test)
    scatter_latent(out / "latent_2d.png", mu, data.y_test, f"2-d VAE latent of the {data.name} test images")
    summary["latent_2d"] = {"mu_mean": mu.mean(0).round(3).tolist(), "mu_std": mu.std(0).round(3).tolist(),
                            "final_train": metrics2}

    vae, params, metrics = _train_vae(cfg, data, cfg.latent_dim, cfg.seed + 1)
    summary["vae"] = {"latent_dim": cfg.latent_dim, "final_train": metrics}
    pick = np.concatenate([np.flatnonzero(data.y_test == c)[:1] for c in np.unique(data.y_test)])[:12]
    x = data.x_test[pick]
    recon = vae.decode(params, vae.encode(params, x))
    save_png(out / "reconstructions.png", image_grid([_rgb(x), _rgb(recon)], scale=scale,
                                                     labels=["input", "recon"], label_width=50))
    test_mu = vae.encode(params, data.x_test)
    test_recon = vae.decode(params, test_mu)
    p = np.clip(test_recon, 1e-6, 1 - 1e-6)
    bce = -(data.x_test * np.log(p) + (1 - data.x_test) * np.log(1 - p)).sum(axis=(1, 2, 3))
    summary["heldout_bce_per_image"] = float(bce.mean())

    ink = data.x_train.sum(axis=(1, 2, 3))
    z_train = vae.encode(params, data.x_train)
    heavy, light = ink >= np.quantile(ink, 0.75), ink <= np.quantile(ink, 0.25)
    vector = z_train[heavy].mean(0) - z_train[light].mean(0)
    base = vae.encode(params, x[:8])
    rows = [_rgb(vae.decode(params, base + w * vector[None])) for w in ATTRIBUTE_WEIGHTS]
    save_png(out / "arithmetic.png", image_grid(rows, scale=scale, labels=[f"{w:+.0f} x ink" for w in
                                                                           ATTRIBUTE_WEIGHTS], label_width=60))

    rng = np.random.default_rng(cfg.seed)
    morph_rows = []
    for a, b in ((0, 1), (3, 8), (4, 9), (2, 7)):
        ia, ib = (rng.choice(np.flatnonzero(data.y_test == c)) if (data.y_test == c).any() else 0 for c in (a, b))
        za, zb = vae.encode(params, data.x_test[[ia, ib]])
        t = np.linspace(0.0, 1.0, MORPH_STEPS)[:, None]
        line = vae.decode(params, (1 - t) * za[None] + t * zb[None])
        morph_rows.append(_rgb(np.concatenate([data.x_test[[ia]], line, data.x_test[[ib]]])))
    save_png(out / "morphing.png", image_grid(morph_rows, scale=scale))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def scatter_latent(path: Path, mu: np.ndarray, labels: np.ndarray, title: str) -> None:
    from worldmodels.viz.plots import _figure, save_figure

    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(mu[m, 0], mu[m, 1], s=8, color=cmap(int(c) % 10), label=str(c), alpha=0.8)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(title, fontsize=10)
    ax.legend(title="class", fontsize=8, markerscale=2, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def scatter_two_domains(path: Path, mu_a: np.ndarray, y_a: np.ndarray, mu_b: np.ndarray, y_b: np.ndarray) -> None:
    """Latent means of two domains on their first two joint principal axes: colour = class,
    dot = teacher's domain, cross = student's domain. Aligned classes overlap."""
    from worldmodels.viz.plots import _figure, save_figure

    both = np.concatenate([mu_a, mu_b])
    centre = both.mean(0)
    _, _, vt = np.linalg.svd(both - centre, full_matrices=False)
    pa, pb = (mu_a - centre) @ vt[:2].T, (mu_b - centre) @ vt[:2].T
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 5.4))
    cmap = plt.get_cmap("tab10")
    for c in np.unique(np.concatenate([y_a, y_b])):
        ax.scatter(pa[y_a == c, 0], pa[y_a == c, 1], s=10, color=cmap(int(c) % 10), marker="o", alpha=0.6,
                   label=str(c))
        ax.scatter(pb[y_b == c, 0], pb[y_b == c, 1], s=28, color=cmap(int(c) % 10), marker="x")
    ax.set_title("two-decoder VAE latent (2 principal axes): o teacher domain, x student domain", fontsize=9)
    ax.legend(title="class", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
