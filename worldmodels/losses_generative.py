"""Pure loss functions of the other generative models and of the experiments' classifiers.

Images (B, H, W, C) in [0, 1]; logits (B, K); per-image terms are summed over pixels, as the
World Models VAE's squared error is (`worldmodels.losses`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BCE_EPS = 1e-6


def binary_cross_entropy_per_image(recon: jax.Array, target: jax.Array) -> jax.Array:
    """-sum [t log p + (1 - t) log(1 - p)] over each image, p clipped to [eps, 1 - eps]: (B,)."""
    p = jnp.clip(recon, BCE_EPS, 1.0 - BCE_EPS)
    return -jnp.sum(target * jnp.log(p) + (1.0 - target) * jnp.log1p(-p), axis=(1, 2, 3))


def reconstruction_per_image(recon: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    """'mse': summed squared error; 'bce': summed binary cross-entropy (the Bernoulli NLL). (B,)."""
    if kind == "bce":
        return binary_cross_entropy_per_image(recon, target)
    return jnp.sum(jnp.square(recon - target), axis=(1, 2, 3))


def perceptual_per_image(features_a: list[jax.Array], features_b: list[jax.Array]) -> jax.Array:
    """Sum over layers of the squared error between two lists of activations, per image: (B,)."""
    total = 0.0
    for a, b in zip(features_a, features_b, strict=True):
        total = total + jnp.sum(jnp.square(a - b), axis=tuple(range(1, a.ndim)))
    return total


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-sum_r targets_r log softmax(logits)_r per example: (B,). One-hot targets give the usual CE."""
    return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def distillation_loss(student_logits: jax.Array, targets: jax.Array, teacher_probs: jax.Array,
                      temperature: float, weight: float) -> jax.Array:
    """Per example: -sum_r targets_r log g_r - weight * sum_r teacher_r log g_r, g = softmax(z / T).

    With one-hot `targets` ([y = r]) and `teacher_probs` = f o phi = softmax(v(phi(x)) / T) this is
    the multi-domain distillation loss; zero teacher probabilities give plain (soft) cross-entropy."""
    log_g = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    return -jnp.sum(targets * log_g, axis=-1) - weight * jnp.sum(teacher_probs * log_g, axis=-1)


def gan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """DCGAN: BCE with real = 1, fake = 0, averaged."""
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def gan_generator_loss(fake_logits: jax.Array) -> jax.Array:
    """DCGAN, the non-saturating generator loss: BCE of the fakes against 'real'."""
    return jnp.mean(jax.nn.softplus(-fake_logits))


def wgan_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """WGAN: the critic minimises E[D(fake)] - E[D(real)] (the negated Wasserstein estimate)."""
    return jnp.mean(fake_scores) - jnp.mean(real_scores)


def gradient_penalty(critic_fn, real: jax.Array, fake: jax.Array, key: jax.Array) -> jax.Array:
    """WGAN-GP: E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates of real and fake."""
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))
