"""Pure loss functions. Shapes: frames (B, S, S, 3), latents (B, Z)."""

from __future__ import annotations

import jax.numpy as jnp


def squared_error_per_image(recon: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Sum of squared errors over each image: (B, S, S, C) x 2 -> (B,)."""
    return jnp.sum(jnp.square(recon - target), axis=(1, 2, 3))


def gaussian_kl_per_image(mu: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims: (B, Z) -> (B,)."""
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def vae_loss_terms(recon, target, mu, logvar, kl_tolerance: float, kl_weight: float = 1.0):
    """The World Models VAE loss: mean over images of SSE + kl_weight * max(KL, tol * Z).

    Returns (loss, recon SSE mean, raw KL mean)."""
    r_loss = squared_error_per_image(recon, target)
    kl = gaussian_kl_per_image(mu, logvar)
    floored = jnp.maximum(kl, kl_tolerance * mu.shape[-1])
    loss = jnp.mean(r_loss + kl_weight * floored)
    return loss, jnp.mean(r_loss), jnp.mean(kl)
