"""The two-decoder VAE: one encoder, one decoder per domain (multi-domain distillation's phi).

Trained on label-paired images (x_a, x_b) of two domains (same class, e.g. a digit and a
garment, or a digit and its transformed copy). Each image of the pair is encoded; from its z
both decoders reconstruct their own domain's image of the pair:

    loss = mean over x in {x_a, x_b} of [ -log p(x_a | z) - log p(x_b | z) + kl_weight * KL(q(z | x)) ]

with -log p the summed squared error or binary cross-entropy (`vision.reconstruction`).
So z carries what the pair shares (the class and its style) and the classes of both domains
line up in one latent space; `translate(params, x, 'a')` = decoder_a(mu(x)) maps an image of
either domain into domain a. As V (one domain, no labels) the pair is the frame and its mirror.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.losses import gaussian_kl_per_image
from worldmodels.losses_generative import reconstruction_per_image
from worldmodels.models.vision.generative import (
    GenerativeModel,
    gaussian_sample,
    masked_step,
    register_generative,
    state_initializer,
)
from worldmodels.models.vision.nets import Encoder, arch_for, make_decoder
from worldmodels.models.vision.variants import _check

DOMAINS = ("a", "b")


@register_generative("two-decoder-vae")
def build_two_decoder_vae(cfg: VisionConfig, image_shape, aux_classifier=False) -> GenerativeModel:
    _check(cfg)
    arch = arch_for(cfg, image_shape)
    encoder = Encoder(arch, cfg.latent_dim)
    decoder = make_decoder(arch)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        x, z = jnp.zeros((1, *arch.image_shape), jnp.float32), jnp.zeros((1, cfg.latent_dim), jnp.float32)
        return {"encoder": encoder.init(k1, x)["params"], "decoder_a": decoder.init(k2, z)["params"],
                "decoder_b": decoder.init(k3, z)["params"]}

    def encode(params, x):
        mu, logvar, _ = encoder.apply({"params": params["encoder"]}, x)
        return mu, logvar

    def decode_to(params, z, domain: str):
        if domain not in DOMAINS:
            raise ConfigError(f"unknown domain '{domain}'; valid: a, b")
        return decoder.apply({"params": params[f"decoder_{domain}"]}, z)

    def decode(params, z):
        return decode_to(params, z, "a")

    def translate(params, x, domain):
        return decode_to(params, encode(params, x)[0], domain)

    def loss(params, batch, key):
        x_a, x_b = batch
        totals, rec_a, rec_b, kls = [], [], [], []
        for i, source in enumerate((x_a, x_b)):
            mu, logvar = encode(params, source)
            z = gaussian_sample(mu, logvar, jax.random.fold_in(key, i))
            ra = reconstruction_per_image(decode_to(params, z, "a"), x_a, cfg.reconstruction)
            rb = reconstruction_per_image(decode_to(params, z, "b"), x_b, cfg.reconstruction)
            kl = gaussian_kl_per_image(mu, logvar)
            totals.append(ra + rb + cfg.kl_weight * jnp.maximum(kl, cfg.kl_tolerance * cfg.latent_dim))
            rec_a.append(ra)
            rec_b.append(rb)
            kls.append(kl)
        total = jnp.mean(jnp.stack(totals))
        recon_a, recon_b = jnp.mean(jnp.stack(rec_a)), jnp.mean(jnp.stack(rec_b))
        return total, {"loss": total, "recon": recon_a, "recon_b": recon_b, "kl": jnp.mean(jnp.stack(kls))}

    default_tx = optax.adam(cfg.learning_rate)
    never = lambda params, step: jax.tree.map(lambda _: jnp.zeros((), bool), params)

    def make_train_step(tx=None):
        return masked_step(loss, tx or default_tx, never)

    return GenerativeModel(name="two-decoder-vae", image_shape=arch.image_shape, latent_dim=cfg.latent_dim,
                           init=init, decode=decode, loss=loss, make_train_step=make_train_step,
                           init_state=state_initializer(init, default_tx), encode=encode, paired=True,
                           translate=translate)
