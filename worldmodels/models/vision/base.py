"""The vision-model interface: what the pipeline needs from any V, and the registry.

A `VisionModel` is a bundle of pure functions over a parameter tree. Frames are float32 in
[0, 1], shape (B, S, S, 3); latents are (B, Z). Every model with an encoder can be V: the
series stage calls `encode`, dreams are shown with `decode`, and training uses `loss` (or a
model-specific `make_train_step`, for models with more than one optimizer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from worldmodels.config import VisionConfig

Params = Any
Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class VisionModel:
    name: str
    latent_dim: int
    frame_size: int
    init: Callable[[jax.Array], Params]
    """key -> parameters."""
    encode: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    """(params, frames (B,S,S,3)) -> (mu, logvar), each (B, Z). Deterministic encoders
    return a very negative logvar, so sampling z from the series gives mu."""
    decode: Callable[[Params, jax.Array], jax.Array]
    """(params, z (B, Z)) -> frames (B, S, S, 3) in [0, 1]."""
    loss: Callable[[Params, jax.Array, jax.Array], tuple[jax.Array, Metrics]]
    """(params, frames, key) -> (scalar loss, metrics); metrics include 'recon' (SSE/image)."""


_REGISTRY: dict[str, Callable[[VisionConfig], VisionModel]] = {}


def register_vision_model(name: str):
    """Decorator: `@register_vision_model("vae") def make_vae(config) -> VisionModel`."""

    def wrap(builder: Callable[[VisionConfig], VisionModel]):
        _REGISTRY[name] = builder
        return builder

    return wrap
