"""Knowledge sharing between networks through VAEs (SEEDS.md section 3).

Per seed: the classes are split in two halves; network k (k = 1, 2) is a classifier and a
generative model trained on half k only. Each generative model generates
`samples_per_class` x (classes of its half) images from its prior, its own classifier labels
them with soft labels (class probabilities), optionally only samples whose top probability is
above `selection_threshold` are kept, and the two reconstructed sets (network 2's own included,
against forgetting) are merged; network 2's classifier is fine-tuned on the merged set and
tested on every class. Rows (the source's table):

    ensemble                 no merging: argmax of the mean of both classifiers' probabilities
    combined + reconstruction / + perceptual / + reconstruction + perceptual
                             the VAE's encoder conv layers are the classifier's, frozen
    separate + perceptual    a VAE with its own layers; perceptual loss from the classifier
    separate + selection + perceptual
    upper bound              one classifier trained on the training images of every class

The perceptual loss is the summed squared error between the 1st and 2nd conv activations of
the network's classifier for the input and for its reconstruction; "+ perceptual" alone means
no reconstruction term.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from worldmodels.config import SharingConfig, VisionConfig
from worldmodels.data.atomic import atomic_write_bytes, atomic_write_text
from worldmodels.errors import ConfigError
from worldmodels.experiments.common import ClassifierTrainer, GenerativeTrainer, mean_std, one_hot
from worldmodels.experiments.data import Dataset, class_split, load_dataset
from worldmodels.models.vision.generative import build_generative
from worldmodels.models.vision.nets import arch_for

ENSEMBLE = "ensemble of the two classifiers, no merging"
UPPER = "upper bound: one classifier trained on all classes"
SELECTED = "separate + best-sample selection + perceptual"
# row -> (generative model, reconstruction weight, perceptual weight)
VARIANTS = {
    "combined + reconstruction loss": ("combined-vae", 1.0, 0.0),
    "combined + perceptual loss": ("combined-vae", 0.0, 1.0),
    "combined + reconstruction + perceptual": ("combined-vae", 1.0, 1.0),
    "separate + perceptual": ("perceptual-vae", 0.0, 1.0),
}
ROWS = (ENSEMBLE, *VARIANTS, SELECTED, UPPER)
# The source's MNIST numbers (mean, std over 10 runs), for reference in the table and chart.
SOURCE = {ENSEMBLE: (0.936, 0.019), "combined + reconstruction loss": (0.953, 0.012),
          "combined + perceptual loss": (0.955, 0.016), "combined + reconstruction + perceptual": (0.939, 0.023),
          "separate + perceptual": (0.965, 0.026), SELECTED: (0.977, 0.008), UPPER: (0.991, 0.001)}


def check_config(cfg: SharingConfig) -> None:
    for name in ("seeds", "classifier_epochs", "vae_epochs", "samples_per_class", "batch_size", "latent_dim"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"sharing.{name} must be >= 1")
    if cfg.finetune_epochs < 0:
        raise ConfigError("sharing.finetune_epochs must be >= 0")
    if not 0.0 <= cfg.selection_threshold < 1.0:
        raise ConfigError("sharing.selection_threshold must be in [0, 1)")
    if cfg.reconstruction not in ("mse", "bce"):
        raise ConfigError(f"unknown sharing.reconstruction '{cfg.reconstruction}'; valid: mse, bce")


def vision_config(cfg: SharingConfig, recon_weight: float = 1.0, perceptual_weight: float = 0.0) -> VisionConfig:
    """The generative models' settings for this experiment (no KL floor: a plain VAE)."""
    return VisionConfig(encoder_channels=tuple(cfg.channels), latent_dim=cfg.latent_dim, kl_tolerance=0.0,
                        kl_weight=cfg.kl_weight, learning_rate=cfg.learning_rate, reconstruction=cfg.reconstruction,
                        reconstruction_weight=recon_weight, perceptual_weight=perceptual_weight * cfg.perceptual_weight)


def run_knowledge_sharing(cfg: SharingConfig, out: str | Path, data: Dataset | None = None,
                          log: Callable[[str], None] = print) -> dict:
    """Run every seed; write results.json, table.md, accuracy.png and samples.png into `out`."""
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or load_dataset(cfg.data, cfg.image_size)
    classes = np.unique(data.y_train)
    class_split(classes, cfg.seed, tuple(cfg.split))  # fail early on a bad split
    k = data.num_classes
    arch = arch_for(vision_config(cfg), data.image_shape)
    classifier = ClassifierTrainer(arch, k, cfg.batch_size)
    models = {row: GenerativeTrainer(build_generative(name, vision_config(cfg, rw, pw), data.image_shape,
                                                      aux_classifier=True), cfg.batch_size)
              for row, (name, rw, pw) in VARIANTS.items()}
    per_seed: list[dict] = []
    reused = 0
    samples_for_picture: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    seed_dir = out / "seeds"
    seed_dir.mkdir(exist_ok=True)
    fingerprint = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("seed", "seeds")}
    fingerprint["data_name"] = data.name
    for s in range(cfg.seeds):
        seed = cfg.seed + s
        done = load_seed_result(seed_dir / f"seed_{seed}.json", fingerprint)
        if done is not None and (s > 0 or (seed_dir / f"samples_{seed}.npz").exists()):
            per_seed.append(done)  # finished by an earlier (or a parallel) run with this config
            reused += 1
            if s == 0:
                samples_for_picture = load_samples(seed_dir / f"samples_{seed}.npz")
            log(f"knowledge-sharing seed {seed}: already done ({seed_dir / f'seed_{seed}.json'})")
            continue
        rng, key = np.random.default_rng(seed), jax.random.key(seed)
        halves = class_split(classes, seed, tuple(cfg.split))
        result = {"seed": seed, "split": [h.tolist() for h in halves], "accuracy": {}, "kept": {}}
        sets = [np.isin(data.y_train, h) for h in halves]
        clfs = []
        for i, mask in enumerate(sets):
            params = classifier.init(jax.random.fold_in(key, i))
            clfs.append(classifier.fit(params, data.x_train[mask], one_hot(data.y_train[mask], k),
                                       cfg.classifier_epochs, cfg.learning_rate, rng))
        probs = [classifier.probs(p, data.x_test) for p in clfs]
        result["accuracy"][ENSEMBLE] = float((((probs[0] + probs[1]) / 2).argmax(-1) == data.y_test).mean())
        result["own_half_accuracy"] = [classifier.evaluate(p, data.x_test[np.isin(data.y_test, h)],
                                                           data.y_test[np.isin(data.y_test, h)])[0]
                                       for p, h in zip(clfs, halves, strict=True)]
        upper = classifier.fit(classifier.init(jax.random.fold_in(key, 7)), data.x_train, one_hot(data.y_train, k),
                               cfg.classifier_epochs, cfg.learning_rate, rng)
        result["accuracy"][UPPER] = classifier.evaluate(upper, data.x_test, data.y_test)[0]

        for v, (row, trainer) in enumerate(models.items()):
            generated, labels = [], []
            for i, mask in enumerate(sets):
                model = trainer.model
                state = model.init_state(jax.random.fold_in(key, 100 + 10 * v + i))
                state = state.replace(params=model.with_classifier(state.params, clfs[i]))
                state, _ = trainer.fit(state, data.x_train[mask], cfg.vae_epochs, rng,
                                       jax.random.fold_in(key, 200 + 10 * v + i))
                images = trainer.sample(state.params, cfg.samples_per_class * len(halves[i]),
                                        jax.random.fold_in(key, 300 + 10 * v + i))
                generated.append(images)
                labels.append(classifier.probs(clfs[i], images))
            x_gen, p_gen = np.concatenate(generated), np.concatenate(labels)
            if s == 0:
                samples_for_picture[row] = (generated, labels)
            arms = [(row, np.ones(len(x_gen), bool))]
            if row == "separate + perceptual":
                arms.append((SELECTED, p_gen.max(-1) > cfg.selection_threshold))
            for name, keep in arms:
                result["kept"][name] = int(keep.sum())
                if keep.sum() == 0:  # nothing confident enough: network 2 stays as it was
                    tuned = clfs[1]
                else:  # as many steps as on the whole set: selection changes the data, not the budget
                    epochs = max(1, round(cfg.finetune_epochs * len(keep) / keep.sum()))
                    tuned = classifier.fit(clfs[1], x_gen[keep], p_gen[keep], epochs, cfg.finetune_learning_rate, rng)
                result["accuracy"][name] = classifier.evaluate(tuned, data.x_test, data.y_test)[0]
        per_seed.append(result)
        if s == 0:
            save_samples(seed_dir / f"samples_{seed}.npz", samples_for_picture)
        atomic_write_text(seed_dir / f"seed_{seed}.json", json.dumps({"config": fingerprint, "result": result}))
        log(f"knowledge-sharing seed {seed}: " + ", ".join(f"{r.split(':')[0][:28]} {result['accuracy'][r]:.3f}"
                                                         for r in ROWS) + f" [{time.perf_counter() - start:.0f} s]")

    summary = summarize(per_seed)
    summary.update({"data": data.name, "image_shape": list(data.image_shape), "train_images": len(data.x_train),
                    "test_images": len(data.x_test), "seeds": cfg.seeds, "seeds_reused": reused,
                    "seconds": time.perf_counter() - start})
    atomic_write_text(out / "results.json", json.dumps({"summary": summary, "per_seed": per_seed}, indent=2))
    atomic_write_text(out / "table.md", table_markdown(summary))
    plot_accuracy(out / "accuracy.png", summary)
    save_samples_picture(out / "samples.png", samples_for_picture, data.image_shape)
    return summary


def load_seed_result(path: Path, fingerprint: dict) -> dict | None:
    """One seed's saved result, if it was made with the same settings (seed and seeds aside).
    Seeds are saved as they finish, so a killed run, or a second process given other seeds
    (`--sharing.seed 5 --sharing.seeds 5`) in the same run dir, shares its work."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved["result"] if saved.get("config") == json.loads(json.dumps(fingerprint)) else None


def save_samples(path: Path, samples: dict) -> None:
    arrays = {}
    for i, (row, (generated, probs)) in enumerate(samples.items()):
        for half in range(len(generated)):
            arrays[f"{i}_{half}_images"] = generated[half][:48]
            arrays[f"{i}_{half}_probs"] = probs[half][:48]
        arrays[f"{i}_name"] = np.array(row)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_samples(path: Path) -> dict:
    with np.load(path) as data:
        out = {}
        i = 0
        while f"{i}_name" in data.files:
            halves = sorted({int(k.split("_")[1]) for k in data.files if k.startswith(f"{i}_") and "images" in k})
            out[str(data[f"{i}_name"])] = ([data[f"{i}_{h}_images"] for h in halves],
                                           [data[f"{i}_{h}_probs"] for h in halves])
            i += 1
    return out


def summarize(per_seed: list[dict]) -> dict:
    rows = {}
    for row in ROWS:
        values = [r["accuracy"][row] for r in per_seed]
        mean, std = mean_std(values)
        rows[row] = {"mean": mean, "std": std, "n": len(values)}
    kept = [r["kept"].get(SELECTED, 0) / max(r["kept"].get("separate + perceptual", 1), 1) for r in per_seed]
    gap_ensemble = rows[SELECTED]["mean"] - rows[ENSEMBLE]["mean"]
    gap_upper = rows[UPPER]["mean"] - rows[SELECTED]["mean"]
    return {"rows": rows, "selection_kept_fraction": float(np.mean(kept)),
            "targets": {"selection_minus_ensemble": gap_ensemble, "upper_minus_selection": gap_upper,
                        "beats_ensemble_by_0.03": gap_ensemble >= 0.03, "within_0.03_of_upper": gap_upper <= 0.03}}


def table_markdown(summary: dict) -> str:
    lines = [f"Knowledge sharing on {summary.get('data', '?')} ({summary.get('seeds', '?')} seeds; test accuracy, "
             "mean ± std)", "", "| approach | test accuracy | source (MNIST) |", "|---|---|---|"]
    for row, v in summary["rows"].items():
        src = SOURCE.get(row)
        lines.append(f"| {row} | {v['mean']:.3f} ± {v['std']:.3f} | "
                     + (f"{src[0]:.3f} ± {src[1]:.3f}" if src else "") + " |")
    t = summary["targets"]
    lines += ["", f"Selection kept {summary['selection_kept_fraction']:.0%} of the generated images. "
              f"Separate + selection + perceptual − ensemble = {t['selection_minus_ensemble']:+.3f} "
              f"(target ≥ 0.03: {'met' if t['beats_ensemble_by_0.03'] else 'missed'}); upper bound − it = "
              f"{t['upper_minus_selection']:+.3f} (target ≤ 0.03: {'met' if t['within_0.03_of_upper'] else 'missed'})."]
    if "seconds" in summary:
        reused = summary.get("seeds_reused", 0)
        lines.append(f"Wall time of this run {summary['seconds']:.0f} s"
                     + (f" ({reused} of the seeds were reused from earlier or parallel runs)." if reused else "."))
    return "\n".join(lines) + "\n"


def plot_accuracy(path: Path, summary: dict) -> None:
    """Horizontal bars (mean ± std over seeds) with the source's MNIST values as markers."""
    from worldmodels.viz.plots import _figure, save_figure

    plt = _figure()
    rows = list(summary["rows"])
    means = [summary["rows"][r]["mean"] for r in rows]
    stds = [summary["rows"][r]["std"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3, label=f"here ({summary.get('data', '')})")
    src = [SOURCE[r][0] if r in SOURCE else np.nan for r in rows]
    ax.plot(src, y, "k|", markersize=14, markeredgewidth=2, label="source (MNIST)")
    lo = max(0.0, min(min(means) - max(stds) - 0.05, 0.9))
    for yi, m, sd in zip(y, means, stds, strict=True):
        ax.text(lo + 0.003, yi, f"{m:.3f} ± {sd:.3f}", va="center", fontsize=8, color="white", fontweight="bold")
    ax.set_yticks(y, [r.replace("upper bound: ", "upper bound:\n") for r in rows], fontsize=8)
    ax.set_xlim(lo, 1.01)
    ax.set_xlabel("test accuracy on all classes")
    ax.set_title(f"Knowledge sharing through VAEs: {summary.get('seeds', '?')} seeds, mean ± std", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.95)
    save_figure(fig, path)


def save_samples_picture(path: Path, samples: dict, image_shape) -> None:
    """Per variant and half: 12 generated images with the label their classifier gave them."""
    from worldmodels.viz.images import image_grid, save_png

    rows, labels = [], []
    for row, (generated, probs) in samples.items():
        for half, (images, p) in enumerate(zip(generated, probs, strict=True)):
            pick = np.linspace(0, len(images) - 1, min(12, len(images))).astype(int)
            order = pick[np.argsort(p[pick].argmax(-1), kind="stable")]
            rgb = np.repeat(images[order], 3, axis=-1) if image_shape[-1] == 1 else images[order]
            rows.append(rgb)
            labels.append(f"{short(row)} / net {half + 1}")
    if rows:
        scale = max(1, 48 // image_shape[0])
        save_png(path, image_grid(rows, scale=scale, labels=labels, label_width=200))


def short(row: str) -> str:
    return row.replace(" loss", "").replace("reconstruction", "recon").replace("perceptual", "perc")

