"""The generative models beside the paper VAE, over any image shape, and how they become V.

`GenerativeModel` is the full interface (any H x W x C, auxiliary classifier features, paired
batches, two optimizers); `as_vision_model` narrows one with an encoder to the pipeline's
`VisionModel` at 64x64x3. Builders are registered twice: here by name for any image shape
(`build_generative`), and in the vision-model registry for V (the package's `__init__`,
which imports every implementation, so both registries are full once the package is imported).

Train steps are `train_step(state, batch, key) -> (state, metrics)` on float images in [0, 1]
(a pair `(x_a, x_b)` for paired models); parameters a model keeps frozen get zero updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.models.train_state import TrainState
from worldmodels.models.vision.base import VisionModel
from worldmodels.models.vision.nets import PAPER_SHAPE

Params = Any
Batch = Any
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]


@dataclass(frozen=True)
class GenerativeModel:
    name: str
    image_shape: tuple[int, int, int]
    latent_dim: int
    init: Callable[[jax.Array], Params]
    """key -> parameters."""
    decode: Callable[[Params, jax.Array], jax.Array]
    """(params, z (B, Z)) -> images (B, H, W, C) in [0, 1] (a GAN's generator)."""
    loss: Callable[[Params, Batch, jax.Array], tuple[jax.Array, dict]]
    """(params, batch, key) -> (scalar loss, metrics). GANs: the critic's loss; metrics hold
    'critic' and 'generator' for the same noise."""
    make_train_step: Callable[[optax.GradientTransformation | None], StepFn]
    """tx -> train_step (not jitted); None = the model's own optimizer."""
    init_state: Callable[[jax.Array], TrainState]
    """key -> TrainState with the model's own optimizer."""
    encode: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]] | None = None
    """(params, images) -> (mu, logvar); None for models without an encoder (GANs)."""
    paired: bool = False
    """Batches are label-paired images of two domains `(x_a, x_b)` (the two-decoder VAE)."""
    translate: Callable[[Params, jax.Array, str], jax.Array] | None = None
    """Two-decoder VAE: (params, images, target domain 'a' | 'b') -> images in that domain."""
    uses_classifier: bool = False
    """The parameters hold a 'features' subtree (perceptual) or an encoder stack (combined) that
    `with_classifier` fills with a trained classifier's conv layers."""
    with_classifier: Callable[[Params, Params], Params] | None = None
    """(params, classifier params) -> params using the classifier's conv stack."""


_BUILDERS: dict[str, Callable[..., GenerativeModel]] = {}
ENCODER_FREE = ("dcgan", "wgan-gp")


def register_generative(name: str):
    """`@register_generative("ae") def build(cfg, image_shape, aux_classifier) -> GenerativeModel`."""

    def wrap(builder):
        _BUILDERS[name] = builder
        return builder

    return wrap


def generative_model_names() -> list[str]:
    return sorted(_BUILDERS)


def build_generative(name: str, cfg: VisionConfig, image_shape: tuple[int, int, int] = PAPER_SHAPE,
                     aux_classifier: bool = False) -> GenerativeModel:
    """A generative model by name for images of `image_shape`. With `aux_classifier`, the
    perceptual and combined models take their conv features from a classifier
    (`with_classifier`); without, they use the label-free proxy described in `variants`."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown generative model '{name}'; valid: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](cfg, tuple(image_shape), aux_classifier)


@dataclass(frozen=True)
class TrainableVisionModel(VisionModel):
    """A `VisionModel` that brings its own train step (frozen layers, phases)."""

    make_train_step: Callable[[optax.GradientTransformation], StepFn] | None = None
    """tx -> train_step(state, uint8 frames, key)."""


def as_vision_model(model: GenerativeModel) -> TrainableVisionModel:
    """The model as V (64x64x3 frames): encode, decode, loss on frames in [0, 1]."""
    if model.encode is None:
        names = [n for n in generative_model_names() if n not in ENCODER_FREE]
        raise ConfigError(f"vision model '{model.name}' has no encoder (a GAN only generates), so it "
                          f"cannot be V; models that can: vae, {', '.join(names)}")
    if model.image_shape != PAPER_SHAPE:
        raise ConfigError(f"V takes 64x64x3 frames, model '{model.name}' was built for {model.image_shape}")
    loss = model.loss
    if model.paired:
        # V has one domain; the second decoder learns the mirrored frame (label-paired trivially).
        loss = lambda params, frames, key: model.loss(params, (frames, frames[:, :, ::-1]), key)

    def make_train_step(tx):
        inner = _v_step(model, tx)

        def train_step(state, batch, key):
            return inner(state, batch.astype(jnp.float32) / 255.0, key)

        return train_step

    return TrainableVisionModel(name=model.name, latent_dim=model.latent_dim, frame_size=PAPER_SHAPE[0],
                                init=model.init, encode=model.encode, decode=model.decode, loss=loss,
                                make_train_step=make_train_step)


def _v_step(model: GenerativeModel, tx):
    if not model.paired:
        return model.make_train_step(tx)
    step = model.make_train_step(tx)
    return lambda state, frames, key: step(state, (frames, frames[:, :, ::-1]), key)


# ----------------------------------------------------------------------------------------------
# helpers for the builders


def gaussian_sample(mu: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
    return mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)


def masked_step(loss_fn, tx: optax.GradientTransformation, frozen: Callable[[Params, jax.Array], Params]) -> StepFn:
    """A one-optimizer train step whose updates are zeroed where `frozen(params, step)` is True
    (a pytree of bools, or of bool scalars traced from the step)."""

    def train_step(state: TrainState, batch, key):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        mask = frozen(state.params, state.step)
        updates = jax.tree.map(lambda u, f: jnp.where(f, jnp.zeros_like(u), u), updates, mask)
        params = optax.apply_updates(state.params, updates)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def state_initializer(init, tx):
    jit_init = jax.jit(init)  # one compile per model, however many states it starts

    def init_state(key):
        params = jit_init(key)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return init_state
