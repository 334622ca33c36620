"""C: the controller. a = squash(W [features] + b), optionally through one hidden layer.

Parameters are a small dict pytree; CMA-ES sees them flattened with `ravel_pytree`.
`features` picks what C sees of the world model: "zh" = [z, h] (CarRacing, 288 inputs for
z = 32, h = 256) or "zch" = [z, c, h] (Doom).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def controller_features(obs: dict[str, jax.Array], features: str) -> jax.Array:
    parts = {"zh": ("z", "h"), "zch": ("z", "c", "h"), "z": ("z",)}[features]
    return jnp.concatenate([obs[p] for p in parts], axis=-1)


def feature_dim(features: str, latent_dim: int, hidden: int) -> int:
    return {"zh": latent_dim + hidden, "zch": latent_dim + 2 * hidden, "z": latent_dim}[features]


def init_controller(key: jax.Array, input_dim: int, output_dim: int, hidden: int = 0,
                    bias: bool = True) -> dict[str, jax.Array]:
    """Small random weights (CMA-ES starts from its own mean; this is for tests and init)."""
    k1, k2 = jax.random.split(key)
    if hidden:
        return {"w1": jax.random.normal(k1, (input_dim, hidden)) / np.sqrt(input_dim),
                "b1": jnp.zeros(hidden),
                "w": jax.random.normal(k2, (hidden, output_dim)) / np.sqrt(hidden),
                "b": jnp.zeros(output_dim)}
    params = {"w": jax.random.normal(k1, (input_dim, output_dim)) / np.sqrt(input_dim)}
    if bias:
        params["b"] = jnp.zeros(output_dim)
    return params


def controller_output(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Pre-squash output (..., A)."""
    if "w1" in params:
        x = jnp.tanh(x @ params["w1"] + params["b1"])
    y = x @ params["w"]
    return y + params["b"] if "b" in params else y


def carracing_squash(y: jax.Array) -> jax.Array:
    """steer = tanh in [-1, 1]; gas, brake = (tanh + 1) / 2 in [0, 1]."""
    t = jnp.tanh(y)
    return jnp.concatenate([t[..., :1], (t[..., 1:] + 1.0) / 2.0], axis=-1)


def carracing_original(y: jax.Array) -> jax.Array:
    """The original code's mapping: steer = tanh, gas = (tanh + 1) / 2, brake = clip(tanh, 0, 1)."""
    t = jnp.tanh(y)
    return jnp.concatenate([t[..., :1], (t[..., 1:2] + 1.0) / 2.0, jnp.clip(t[..., 2:], 0.0, 1.0)], axis=-1)
