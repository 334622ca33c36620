"""What the experiments share: classifier training (hard or soft targets), generative-model
training on in-memory images, sampling, and summary statistics.

Every step is one jitted call on a fixed-size batch, so datasets of any size (they differ per
seed and per class split) reuse one compiled step; the Python loop only picks indices.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from worldmodels.losses_generative import distillation_loss
from worldmodels.models.vision.generative import GenerativeModel
from worldmodels.models.vision.layers import conv_compiler_options
from worldmodels.models.vision.nets import Arch, Classifier


def batches(n: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches of exactly `batch` (a short dataset is sampled with replacement;
    the remainder of a long one is dropped, and the next epoch reshuffles)."""
    if n < batch:
        return [rng.choice(n, batch, replace=True)]
    perm = rng.permutation(n)
    return [perm[i:i + batch] for i in range(0, n - batch + 1, batch)]


def chunked(fn, x: np.ndarray, chunk: int = 256) -> list[np.ndarray]:
    """fn over fixed-size chunks of x (the last one zero-padded), so one compiled shape serves
    every length; results trimmed back."""
    out = []
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk]
        n = len(part)
        if n < chunk:
            part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
        out.append(np.asarray(fn(part))[:n])
    return out


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels]


class ClassifierTrainer:
    """A conv classifier (`nets.Classifier`) and its jitted Adam step on soft targets."""

    def __init__(self, arch: Arch, num_classes: int, batch_size: int):
        self.module = Classifier(arch, num_classes)
        self.arch, self.num_classes, self.batch_size = arch, num_classes, batch_size
        self.tx = optax.scale_by_adam()
        module, tx = self.module, self.tx

        def step(params, opt_state, x, targets, lr, teacher, weight, temperature):
            def loss_fn(p):
                logits = module.apply({"params": p}, x)
                return jnp.mean(distillation_loss(logits, targets, teacher, temperature, weight))

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
            return params, opt_state, loss

        options = conv_compiler_options()
        self._step = jax.jit(step, compiler_options=options)
        self._logits = jax.jit(lambda p, x: module.apply({"params": p}, x), compiler_options=options)
        self._init = jax.jit(module.init)

    def init(self, key: jax.Array):
        return self._init(key, jnp.zeros((1, *self.arch.image_shape), jnp.float32))["params"]

    def fit(self, params, x: np.ndarray, targets: np.ndarray, epochs: int, lr: float, rng: np.random.Generator,
            teacher: np.ndarray | None = None, weight: float = 0.0, temperature: float = 1.0,
            on_epoch: Callable[[int, object], None] | None = None):
        """Adam on mean soft cross-entropy of softmax(logits / T) against `targets` (N, K)
        (one-hot = hard labels), minus `weight` * sum teacher * log softmax (distillation)."""
        opt_state = self.tx.init(params)
        teacher = np.zeros_like(targets) if teacher is None else teacher
        for epoch in range(epochs):
            for idx in batches(len(x), self.batch_size, rng):
                params, opt_state, _ = self._step(params, opt_state, x[idx], targets[idx], lr, teacher[idx],
                                                  weight, temperature)
            if on_epoch is not None:
                on_epoch(epoch, params)
        return params

    def logits(self, params, x: np.ndarray) -> np.ndarray:
        return np.concatenate(chunked(lambda part: self._logits(params, part), x))

    def probs(self, params, x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        return np.asarray(jax.nn.softmax(self.logits(params, x) / temperature, axis=-1))

    def evaluate(self, params, x: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> tuple[float, float]:
        """(accuracy, mean cross-entropy of softmax(logits / T)) on labelled images."""
        logits = self.logits(params, x) / temperature
        ce = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)), y[:, None], 1).mean()
        return float((logits.argmax(-1) == y).mean()), float(ce)


class GenerativeTrainer:
    """A generative model's jitted train step, reused across datasets of any size."""

    def __init__(self, model: GenerativeModel, batch_size: int):
        self.model, self.batch_size = model, batch_size
        options = conv_compiler_options()
        self._step = jax.jit(model.make_train_step(), compiler_options=options)
        self._decode = jax.jit(model.decode, compiler_options=options)
        self._encode = jax.jit(model.encode, compiler_options=options) if model.encode is not None else None

    def fit(self, state, data, epochs: int, rng: np.random.Generator, key: jax.Array):
        """`data`: images (N, H, W, C), or a pair of equally long arrays for paired models."""
        n = len(data[0]) if self.model.paired else len(data)
        metrics = None
        for epoch in range(epochs):
            for i, idx in enumerate(batches(n, self.batch_size, rng)):
                batch = (data[0][idx], data[1][idx]) if self.model.paired else data[idx]
                state, metrics = self._step(state, batch, jax.random.fold_in(key, epoch * 100003 + i))
        return state, ({k: float(v) for k, v in metrics.items()} if metrics else {})

    def sample(self, params, n: int, key: jax.Array) -> np.ndarray:
        """n images decoded from z ~ N(0, I)."""
        return self.decode(params, np.asarray(jax.random.normal(key, (n, self.model.latent_dim))))

    def decode(self, params, z: np.ndarray) -> np.ndarray:
        return np.concatenate(chunked(lambda part: self._decode(params, part), np.asarray(z, np.float32)))

    def encode(self, params, x: np.ndarray) -> np.ndarray:
        """mu of each image."""
        return np.concatenate(chunked(lambda part: self._encode(params, part)[0], x))


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def experiment_dir(run: str, name: str, config, section: str):
    """RUN/<name>, created, with the resolved config written into it (an experiment reruns from
    scratch: its outputs and config.json are replaced)."""
    import os
    from pathlib import Path

    from worldmodels.data.atomic import atomic_write_text
    from worldmodels.errors import WorldModelsError

    folder = Path(run) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        raise WorldModelsError(f"cannot write to {folder} ({exc}); pick a writable RUN=") from None
    atomic_write_text(folder / "config.json", config.to_json())
    return folder
