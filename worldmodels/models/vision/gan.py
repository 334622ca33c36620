"""DCGAN and WGAN-GP: a generator (z -> image) and a critic (image -> score). No encoder.

The generator is the architecture's decoder (`nets.make_decoder`, sigmoid output in [0, 1]);
the critic is its conv stack and one linear output, without batch norm (WGAN-GP needs per-image
gradients). Each has its own Adam (beta1 = 0.5, as the book's GANs; WGAN-GP also beta2 = 0.9),
learning rate `vision.learning_rate`.

- 'dcgan': one discriminator step (BCE real = 1, fake = 0) then one generator step with the
  non-saturating loss, per train step.
- 'wgan-gp': `vision.critic_steps` critic steps (E[D(fake)] - E[D(real)] + `gradient_penalty`
  * E[(||grad D(x_hat)|| - 1)^2]) on the same real batch with fresh noise, then one generator
  step (-E[D(fake)]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.losses_generative import (
    gan_discriminator_loss,
    gan_generator_loss,
    gradient_penalty,
    wgan_critic_loss,
)
from worldmodels.models.train_state import TrainState
from worldmodels.models.vision.generative import GenerativeModel, register_generative
from worldmodels.models.vision.nets import Critic, arch_for, make_decoder


def build_gan(name: str, cfg: VisionConfig, image_shape, wasserstein: bool) -> GenerativeModel:
    if cfg.latent_dim < 1:
        raise ConfigError("vision.latent_dim must be >= 1")
    if wasserstein and cfg.critic_steps < 1:
        raise ConfigError("vision.critic_steps must be >= 1")
    arch = arch_for(cfg, image_shape)
    generator, critic = make_decoder(arch), Critic(arch)
    critic_steps = cfg.critic_steps if wasserstein else 1
    tx_g = optax.adam(cfg.learning_rate, b1=0.5, b2=0.9 if wasserstein else 0.999)
    tx_c = optax.adam(cfg.learning_rate, b1=0.5, b2=0.9 if wasserstein else 0.999)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"generator": generator.init(k1, jnp.zeros((1, cfg.latent_dim), jnp.float32))["params"],
                "critic": critic.init(k2, jnp.zeros((1, *arch.image_shape), jnp.float32))["params"]}

    def decode(params, z):
        return generator.apply({"params": params["generator"]}, z)

    def score(critic_params, x):
        return critic.apply({"params": critic_params}, x)

    def critic_loss(critic_params, real, fake, key):
        r, f = score(critic_params, real), score(critic_params, fake)
        if not wasserstein:
            return gan_discriminator_loss(r, f)
        penalty = gradient_penalty(lambda x: score(critic_params, x), real, fake, key)
        return wgan_critic_loss(r, f) + cfg.gradient_penalty * penalty

    def generator_loss(generator_params, critic_params, z):
        s = score(critic_params, generator.apply({"params": generator_params}, z))
        return -jnp.mean(s) if wasserstein else gan_generator_loss(s)

    def noise(key, n):
        return jax.random.normal(key, (n, cfg.latent_dim), jnp.float32)

    def loss(params, real, key):
        kz, kgp = jax.random.split(key)
        z = noise(kz, real.shape[0])
        c = critic_loss(params["critic"], real, decode(params, z), kgp)
        g = generator_loss(params["generator"], params["critic"], z)
        return c, {"loss": c, "critic": c, "generator": g}

    def make_train_step(tx=None):
        del tx  # a GAN has its own two optimizers

        def train_step(state: TrainState, real, key):
            params = state.params
            opt_g, opt_c = state.opt_state
            n = real.shape[0]
            k_critic, k_gen = jax.random.split(key)

            def critic_update(carry, k):
                c_params, c_opt = carry
                kz, kgp = jax.random.split(k)
                fake = jax.lax.stop_gradient(decode(params, noise(kz, n)))
                value, grads = jax.value_and_grad(critic_loss)(c_params, real, fake, kgp)
                updates, c_opt = tx_c.update(grads, c_opt, c_params)
                return (optax.apply_updates(c_params, updates), c_opt), value

            (c_params, opt_c), c_values = jax.lax.scan(critic_update, (params["critic"], opt_c),
                                                       jax.random.split(k_critic, critic_steps))
            z = noise(k_gen, n)
            g_value, g_grads = jax.value_and_grad(generator_loss)(params["generator"], c_params, z)
            updates, opt_g = tx_g.update(g_grads, opt_g, params["generator"])
            g_params = optax.apply_updates(params["generator"], updates)
            metrics = {"loss": c_values[-1], "critic": jnp.mean(c_values), "generator": g_value}
            new = TrainState(step=state.step + 1, params={"generator": g_params, "critic": c_params},
                             opt_state=(opt_g, opt_c))
            return new, metrics

        return train_step

    jit_init = jax.jit(init)

    def init_state(key):
        params = jit_init(key)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=(tx_g.init(params["generator"]), tx_c.init(params["critic"])))

    return GenerativeModel(name=name, image_shape=arch.image_shape, latent_dim=cfg.latent_dim, init=init,
                           decode=decode, loss=loss, make_train_step=make_train_step, init_state=init_state)


@register_generative("dcgan")
def build_dcgan(cfg, image_shape, aux_classifier=False):
    return build_gan("dcgan", cfg, image_shape, wasserstein=False)


@register_generative("wgan-gp")
def build_wgan_gp(cfg, image_shape, aux_classifier=False):
    return build_gan("wgan-gp", cfg, image_shape, wasserstein=True)
