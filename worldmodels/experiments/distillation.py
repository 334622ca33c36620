"""Multi-domain distillation (SEEDS.md section 4).

A teacher f = softmax(v(x) / T) is trained on the Big split of a domain S; a student
g = softmax(z(x) / T) on the Small split of a domain D, with a known mapping phi: D -> S, and

    L = - sum_i sum_r [y_i = r] log g_r(x_i) - lambda sum_i sum_r (f o phi)_r(x_i) log g_r(x_i).

Experiments (the student always learns from the Small split of D and is tested on D's test set;
the same student without the teacher, lambda = 0, is the baseline):

    identity     S = D; the teacher learns from Big as it is; phi = identity
    noise        the teacher learns from Big + N(0, noise_std) noise; phi adds the same kind of noise
    dilated      the teacher learns from Big passed through a fixed random convolution (kernel 5,
                 dilation 2, 'SAME'); phi = that convolution
    two-decoder  S is another domain (`teacher_data`, e.g. MNIST for FashionMNIST; offline: each
                 digit rotated 90 degrees with inverted intensities); the teacher learns from S-Big;
                 phi = decoder_S(mu(x)) of a two-decoder VAE trained on label-paired
                 (D-Small, S-Big) images

Accuracy and cross-entropy on the test set are recorded every epoch for both students
(mean over `seeds` student runs); the teacher is trained once per experiment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from worldmodels.config import DistillConfig, VisionConfig
from worldmodels.data.atomic import atomic_write_text
from worldmodels.errors import ConfigError, DataError
from worldmodels.experiments.common import ClassifierTrainer, GenerativeTrainer, chunked, mean_std, one_hot
from worldmodels.experiments.data import Dataset, load_dataset
from worldmodels.models.vision.generative import build_generative
from worldmodels.models.vision.nets import arch_for

EXPERIMENTS = ("identity", "noise", "dilated", "two-decoder")
DILATION, DILATED_KERNEL = 2, 5


def check_config(cfg: DistillConfig) -> None:
    unknown = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if unknown or not cfg.experiments:
        raise ConfigError(f"unknown distill.experiments {unknown or '()'}; valid: {', '.join(EXPERIMENTS)}")
    for name in ("seeds", "small_size", "teacher_epochs", "student_epochs", "batch_size", "vae_epochs",
                 "vae_latent_dim"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"distill.{name} must be >= 1")
    if cfg.temperature <= 0 or cfg.weight < 0 or cfg.noise_std < 0:
        raise ConfigError("distill.temperature must be > 0, distill.weight and distill.noise_std >= 0")


def transformed_copy(x: np.ndarray) -> np.ndarray:
    """The offline second domain: each image rotated 90 degrees counter-clockwise, intensities inverted."""
    return 1.0 - np.rot90(x, k=1, axes=(1, 2))


def dilated_conv(x: np.ndarray, seed: int) -> np.ndarray:
    """A fixed random convolution (kernel 5, dilation 2, 'SAME', positive weights summing to 1)."""
    kernel = np.random.default_rng(seed).uniform(0.0, 1.0, (DILATED_KERNEL, DILATED_KERNEL, 1, 1))
    kernel = jnp.asarray(kernel / kernel.sum(), jnp.float32)
    y = jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), kernel, (1, 1), "SAME",
                                     rhs_dilation=(DILATION, DILATION), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = np.asarray(y)
    return y / max(float(y.max()), 1e-6)


def small_big_split(y: np.ndarray, small: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a class-stratified Small split of `small` images and of the rest (Big)."""
    if small >= len(y):
        raise DataError(f"distill.small_size {small} leaves no Big split ({len(y)} training images)")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    chosen = []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        share = small // len(classes) + (1 if i < small % len(classes) else 0)
        chosen.append(idx[:share])
    small_idx = np.sort(np.concatenate(chosen))
    return small_idx, np.setdiff1d(np.arange(len(y)), small_idx)


def label_pairs(y_a: np.ndarray, y_b: np.ndarray, per_image: int, rng: np.random.Generator):
    """Index pairs (i, j) with y_a[i] == y_b[j]: `per_image` random partners in b for each a."""
    rows, cols = [], []
    for i, label in enumerate(y_a):
        partners = np.flatnonzero(y_b == label)
        if len(partners) == 0:
            raise DataError(f"class {label} has no image in the teacher's domain to pair with")
        rows += [i] * per_image
        cols += rng.choice(partners, per_image).tolist()
    return np.array(rows), np.array(cols)


def run_distillation(cfg: DistillConfig, out: str | Path, data: Dataset | None = None,
                     teacher_data: Dataset | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the experiments; write results.json, table.md, curves.png, mapping.png into `out`."""
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data or load_dataset(cfg.data, cfg.image_size)
    if "two-decoder" in cfg.experiments and teacher_data is None:
        if cfg.teacher_data:
            teacher_data = load_dataset(cfg.teacher_data, cfg.image_size)
        else:
            teacher_data = Dataset(f"{data.name}-rot90-inverted", transformed_copy(data.x_train), data.y_train,
                                   transformed_copy(data.x_test), data.y_test)
    if teacher_data is not None and teacher_data.image_shape != data.image_shape:
        raise DataError(f"the teacher's images {teacher_data.image_shape} and the student's {data.image_shape} "
                        "differ in shape; give both domains at one size")
    k = max(data.num_classes, teacher_data.num_classes if teacher_data is not None else 0)
    vcfg = VisionConfig(encoder_channels=tuple(cfg.channels), latent_dim=cfg.vae_latent_dim, kl_tolerance=0.0,
                        learning_rate=cfg.learning_rate, reconstruction="bce")
    arch = arch_for(vcfg, data.image_shape)
    net = ClassifierTrainer(arch, k, cfg.batch_size)
    start = time.perf_counter()
    small, big = small_big_split(data.y_train, cfg.small_size, cfg.seed)
    x_small, y_small = data.x_train[small], data.y_train[small]
    targets = one_hot(y_small, k)

    def student_curves(teacher_probs: np.ndarray | None, seed: int) -> list[dict]:
        rows: list[dict] = []

        def record(epoch, params):
            acc, ce = net.evaluate(params, data.x_test, data.y_test, cfg.temperature)  # g = softmax(z / T)
            rows.append({"epoch": epoch + 1, "accuracy": acc, "cross_entropy": ce})

        weight = cfg.weight if teacher_probs is not None else 0.0
        net.fit(net.init(jax.random.key(seed)), x_small, targets, cfg.student_epochs, cfg.learning_rate,
                np.random.default_rng(seed), teacher=teacher_probs, weight=weight, temperature=cfg.temperature,
                on_epoch=record)
        return rows

    seeds = [cfg.seed + 1000 + s for s in range(cfg.seeds)]
    baseline = [student_curves(None, s) for s in seeds]
    log(f"distillation: student without teacher, final accuracy "
        f"{np.mean([c[-1]['accuracy'] for c in baseline]):.3f} [{time.perf_counter() - start:.0f} s]")
    results = {"without_teacher": baseline, "experiments": {}}
    pictures = {}
    for e, name in enumerate(cfg.experiments):
        rng = np.random.default_rng(cfg.seed + 10 * e)
        x_big, y_big = data.x_train[big], data.y_train[big]
        if name == "identity":
            teach_x, phi_small, teach_test = x_big, x_small, data.x_test
        elif name == "noise":
            noise = lambda x, rng=rng: (x + rng.normal(0.0, cfg.noise_std, x.shape)).astype(np.float32)
            teach_x, phi_small, teach_test = noise(x_big), noise(x_small), noise(data.x_test)
        elif name == "dilated":
            teach_x, phi_small, teach_test = (dilated_conv(v, cfg.seed) for v in (x_big, x_small, data.x_test))
        else:
            # S-Big: the teacher domain's own Big split (for the transformed copy: the same images as Big)
            _, t_big = small_big_split(teacher_data.y_train, cfg.small_size, cfg.seed)
            teach_x, y_big = teacher_data.x_train[t_big], teacher_data.y_train[t_big]
            vae = GenerativeTrainer(build_generative("two-decoder-vae", vcfg, data.image_shape), cfg.batch_size)
            # domain a = the teacher's S, domain b = the student's D
            rows, cols = label_pairs(y_small, y_big, 8, rng)
            state = vae.model.init_state(jax.random.key(cfg.seed + 77))
            state, vae_metrics = vae.fit(state, (teach_x[cols], x_small[rows]), cfg.vae_epochs, rng,
                                         jax.random.key(cfg.seed + 78))
            translate = jax.jit(lambda p, x, m=vae.model: m.translate(p, x, "a"))
            phi = lambda x, p=state.params, f=translate: np.concatenate(chunked(lambda part: f(p, part), x))
            phi_small, teach_test = phi(x_small), phi(data.x_test)
            pictures["vae"] = (vae, state.params, x_small, y_small, teach_x[:500], y_big[:500], phi_small)
            results.setdefault("two_decoder_vae", vae_metrics)
        teacher = net.fit(net.init(jax.random.key(cfg.seed + 500 + e)), teach_x, one_hot(y_big, k),
                          cfg.teacher_epochs, cfg.learning_rate, rng)
        teacher_probs = net.probs(teacher, phi_small, cfg.temperature)
        own_test = (teacher_data.x_test, teacher_data.y_test) if name == "two-decoder" else (teach_test, data.y_test)
        info = {"teacher_accuracy_own_domain": net.evaluate(teacher, *own_test)[0],
                "teacher_accuracy_through_phi": net.evaluate(teacher, teach_test, data.y_test)[0],
                "teacher_agrees_with_small_labels": float((teacher_probs.argmax(-1) == y_small).mean()),
                "with_teacher": [student_curves(teacher_probs, s) for s in seeds]}
        results["experiments"][name] = info
        pictures.setdefault("phi", []).append((name, x_small[:10], phi_small[:10]))
        log(f"distillation {name}: teacher {info['teacher_accuracy_own_domain']:.3f} (through phi "
            f"{info['teacher_accuracy_through_phi']:.3f}); student with teacher "
            f"{np.mean([c[-1]['accuracy'] for c in info['with_teacher']]):.3f} [{time.perf_counter() - start:.0f} s]")

    summary = summarize(results, cfg)
    summary.update({"data": data.name, "teacher_data": teacher_data.name if teacher_data is not None else data.name,
                    "small": len(small), "big": len(big), "test": len(data.x_test),
                    "seconds": time.perf_counter() - start})
    atomic_write_text(out / "results.json", json.dumps({"summary": summary, "curves": results}, indent=2))
    atomic_write_text(out / "table.md", table_markdown(summary))
    plot_curves(out / "curves.png", results, summary)
    save_mapping_pictures(out, pictures, data.image_shape)
    return summary


def _mean_curve(curves: list[list[dict]], key: str) -> np.ndarray:
    return np.mean([[row[key] for row in c] for c in curves], axis=0)


def summarize(results: dict, cfg: DistillConfig) -> dict:
    base = results["without_teacher"]

    def final(curves, key):
        return mean_std([c[-1][key] for c in curves])

    rows = {}
    for name, info in results["experiments"].items():
        curves = info["with_teacher"]
        acc_t, ce_t = final(curves, "accuracy"), final(curves, "cross_entropy")
        acc_b, ce_b = final(base, "accuracy"), final(base, "cross_entropy")
        # roughness of the curve: mean absolute epoch-to-epoch change of accuracy
        rough_t = float(np.mean(np.abs(np.diff(_mean_curve(curves, "accuracy"))))) if cfg.student_epochs > 1 else 0.0
        rows[name] = {"teacher_accuracy_own_domain": info["teacher_accuracy_own_domain"],
                      "teacher_accuracy_through_phi": info["teacher_accuracy_through_phi"],
                      "with_accuracy": acc_t, "without_accuracy": acc_b, "with_cross_entropy": ce_t,
                      "without_cross_entropy": ce_b, "with_roughness": rough_t,
                      "with_beats_without": acc_t[0] > acc_b[0] and ce_t[0] < ce_b[0]}
    return {"rows": rows, "temperature": cfg.temperature, "weight": cfg.weight, "seeds": cfg.seeds,
            "student_epochs": cfg.student_epochs}


def table_markdown(summary: dict) -> str:
    lines = [f"Distillation: student on {summary.get('small', '?')} images of {summary.get('data', '?')}, "
             f"teacher on the other {summary.get('big', '?')} (T = {summary['temperature']}, "
             f"λ = {summary['weight']}, {summary['seeds']} student seeds, after {summary['student_epochs']} epochs; "
             "mean ± std)", "",
             "| φ | teacher acc. (own domain / through φ) | student acc. with teacher | without | "
             "student CE with teacher | without |", "|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        lines.append(f"| {name} | {r['teacher_accuracy_own_domain']:.3f} / {r['teacher_accuracy_through_phi']:.3f} | "
                     f"{r['with_accuracy'][0]:.3f} ± {r['with_accuracy'][1]:.3f} | "
                     f"{r['without_accuracy'][0]:.3f} ± {r['without_accuracy'][1]:.3f} | "
                     f"{r['with_cross_entropy'][0]:.3f} ± {r['with_cross_entropy'][1]:.3f} | "
                     f"{r['without_cross_entropy'][0]:.3f} ± {r['without_cross_entropy'][1]:.3f} |")
    if "seconds" in summary:
        lines += ["", f"Wall time {summary['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot_curves(path: Path, results: dict, summary: dict) -> None:
    """Per experiment: test accuracy and cross-entropy per epoch, with and without the teacher."""
    from worldmodels.viz.plots import _figure, save_figure

    plt = _figure()
    names = list(results["experiments"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6), squeeze=False)
    base = results["without_teacher"]
    for j, name in enumerate(names):
        curves = results["experiments"][name]["with_teacher"]
        for i, key in enumerate(("accuracy", "cross_entropy")):
            ax = axes[i][j]
            epochs = np.arange(1, len(base[0]) + 1)
            for label, c, colour in (("with teacher", curves, "tab:blue"), ("without", base, "tab:orange")):
                values = np.array([[row[key] for row in run] for run in c])
                ax.plot(epochs, values.mean(0), color=colour, label=label)
                if len(values) > 1:
                    ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.2)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test " + key.replace("_", "-"))
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"φ = {name}", fontsize=10)
                ax.legend(fontsize=8)
    fig.suptitle(f"Student on {summary.get('small', '?')} images: with vs without teacher "
                 f"(T = {summary['temperature']}, λ = {summary['weight']})", fontsize=10)
    save_figure(fig, path)


def save_mapping_pictures(out: Path, pictures: dict, image_shape) -> None:
    """mapping.png: student images over phi(image) for each experiment; latent.png: the
    two-decoder VAE's latent means of both domains (first two principal axes), by class."""
    from worldmodels.viz.images import image_grid, save_png

    rgb = (lambda x: np.repeat(x, 3, -1)) if image_shape[-1] == 1 else (lambda x: x)
    rows, labels = [], []
    for i, (name, x, mapped) in enumerate(pictures.get("phi", [])):
        if i == 0:  # the same student images for every phi
            rows, labels = [rgb(x)], ["student input"]
        rows.append(rgb(np.clip(mapped, 0, 1)))
        labels.append(f"phi: {name}")
    if rows:
        save_png(out / "mapping.png", image_grid(rows, scale=max(1, 48 // image_shape[0]), labels=labels,
                                                 label_width=110))
    if "vae" in pictures:
        from worldmodels.experiments.pictures import scatter_two_domains

        vae, params, x_d, y_d, x_s, y_s, _ = pictures["vae"]
        scatter_two_domains(out / "latent.png", vae.encode(params, x_s), y_s, vae.encode(params, x_d), y_d)
