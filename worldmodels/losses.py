"""Pure loss functions. Shapes: frames (B, S, S, 3), latents (B, Z)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


LOG_SQRT_2PI = 0.5 * float(np.log(2.0 * np.pi))


def mdn_log_likelihood(logit_pi, mu, log_sigma, target):
    """log sum_k pi_k N(target | mu_k, sigma_k), per dimension, computed stably.

    logit_pi, mu, log_sigma: (..., K, Z); target: (..., Z) -> (..., Z)."""
    log_pi = jax.nn.log_softmax(logit_pi, axis=-2)
    scaled = (target[..., None, :] - mu) * jnp.exp(-log_sigma)
    log_normal = -0.5 * jnp.square(scaled) - log_sigma - LOG_SQRT_2PI
    return jax.scipy.special.logsumexp(log_pi + log_normal, axis=-2)


def masked_mean(values, mask):
    """Mean of `values` over entries where `mask` is 1 (0 if there are none)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def binary_cross_entropy_with_logits(logits, labels):
    """Elementwise BCE, stable for any logit."""
    return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
