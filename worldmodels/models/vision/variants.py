"""The autoencoder and the VAE variants: one encoder/decoder family, four losses.

- 'ae': deterministic encoder (z = mu), loss = reconstruction (`vision.reconstruction`:
  summed squared error 'mse' or summed binary cross-entropy 'bce').
- 'beta-vae': reconstruction + `kl_weight` * max(KL, `kl_tolerance` * Z); with 'mse',
  weight 1 and tolerance 0.5 this is the paper's loss on the same layers.
- 'perceptual-vae': `reconstruction_weight` * reconstruction + `perceptual_weight` * sum over
  the 1st and 2nd conv layers of a classifier of ||act(x) - act(x_hat)||^2 + KL term
  (`reconstruction_weight` 0 = perceptual loss alone). The classifier is separate: its conv
  layers live in the parameters under 'features' and are never updated.
- 'combined-vae': the classifier's conv layers ARE the encoder's conv layers; they are trained
  with the classifier first and frozen while the rest trains. Loss as 'perceptual-vae', the
  features being the (frozen) encoder layers themselves.

Labels and V. A CarRacing frame has no class label, so as V (no classifier) the two models
that need one use a label-free proxy, trained by the ordinary V loop:
- 'perceptual-vae': the features are the model's own first two encoder conv layers, under
  `stop_gradient` (a self-perceptual loss: the encoder learns from reconstruction and KL, the
  perceptual term only shapes the decoder). `reconstruction_weight` must then be > 0.
- 'combined-vae': the "classifier" phase is `vision.combined_pretrain_steps` steps of training
  the whole VAE on its own loss (reconstruction as the proxy task for the conv layers); after
  them the encoder's conv layers are frozen and the heads and decoder go on training.
The experiments pass a trained classifier instead (`aux_classifier=True`, `with_classifier`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.losses import gaussian_kl_per_image
from worldmodels.losses_generative import perceptual_per_image, reconstruction_per_image
from worldmodels.models.vision.generative import (
    GenerativeModel,
    gaussian_sample,
    masked_step,
    register_generative,
    state_initializer,
)
from worldmodels.models.vision.nets import ConvStack, Encoder, arch_for, make_decoder

PERCEPTUAL_LAYERS = 2
RECONSTRUCTIONS = ("mse", "bce")


def _check(cfg: VisionConfig) -> None:
    if cfg.reconstruction not in RECONSTRUCTIONS:
        raise ConfigError(f"unknown vision.reconstruction '{cfg.reconstruction}'; valid: {', '.join(RECONSTRUCTIONS)}")
    if cfg.latent_dim < 1:
        raise ConfigError("vision.latent_dim must be >= 1")


def build_family(name: str, cfg: VisionConfig, image_shape, aux_classifier: bool, *, deterministic: bool,
                 perceptual: bool, shared: bool) -> GenerativeModel:
    """One member of the family. `shared`: the encoder stack is the classifier's (combined)."""
    _check(cfg)
    arch = arch_for(cfg, image_shape)
    encoder = Encoder(arch, cfg.latent_dim, deterministic)
    decoder = make_decoder(arch)
    stack = ConvStack(arch)
    kl_weight = 0.0 if deterministic else cfg.kl_weight
    recon_weight = cfg.reconstruction_weight if perceptual else 1.0
    separate_features = perceptual and aux_classifier and not shared
    if perceptual and not aux_classifier and recon_weight <= 0:
        raise ConfigError(f"'{name}' without a classifier (as V) learns its perceptual features from "
                          "reconstruction: vision.reconstruction_weight must be > 0")
    if len(arch.channels) < PERCEPTUAL_LAYERS and perceptual:
        raise ConfigError(f"'{name}' needs at least {PERCEPTUAL_LAYERS} conv layers")
    # combined as V: freeze after the proxy phase; combined with a classifier: frozen from step 0.
    pretrain = 0 if aux_classifier else cfg.combined_pretrain_steps

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        x = jnp.zeros((1, *arch.image_shape), jnp.float32)
        params = {"encoder": encoder.init(k1, x)["params"],
                  "decoder": decoder.init(k2, jnp.zeros((1, cfg.latent_dim), jnp.float32))["params"]}
        if separate_features:
            params["features"] = stack.init(k3, x)["params"]
        return params

    def encode(params, x):
        mu, logvar, _ = encoder.apply({"params": params["encoder"]}, x)
        return mu, logvar

    def decode(params, z):
        return decoder.apply({"params": params["decoder"]}, z)

    def features(params, x):
        source = params["features"] if separate_features else params["encoder"]["stack"]
        return stack.apply({"params": jax.lax.stop_gradient(source)}, x, depth=PERCEPTUAL_LAYERS)

    def loss(params, x, key):
        mu, logvar, _ = encoder.apply({"params": params["encoder"]}, x)
        z = mu if deterministic else gaussian_sample(mu, logvar, key)
        recon = decode(params, z)
        r_loss = reconstruction_per_image(recon, x, cfg.reconstruction)
        total = recon_weight * r_loss
        metrics = {"recon": jnp.mean(r_loss)}
        if perceptual:
            p_loss = perceptual_per_image(features(params, x), features(params, recon))
            total = total + cfg.perceptual_weight * p_loss
            metrics["perceptual"] = jnp.mean(p_loss)
        kl = gaussian_kl_per_image(mu, logvar)
        if not deterministic:
            total = total + kl_weight * jnp.maximum(kl, cfg.kl_tolerance * cfg.latent_dim)
        metrics["kl"] = jnp.mean(kl) if not deterministic else jnp.zeros(())
        total = jnp.mean(total)
        metrics["loss"] = total
        return total, metrics

    def frozen(params, step):
        mask = jax.tree.map(lambda _: jnp.zeros((), bool), params)
        if "features" in params:
            mask["features"] = jax.tree.map(lambda _: jnp.ones((), bool), params["features"])
        if shared:
            mask["encoder"]["stack"] = jax.tree.map(lambda _: step >= pretrain, params["encoder"]["stack"])
        return mask

    default_tx = optax.adam(cfg.learning_rate)

    def make_train_step(tx=None):
        return masked_step(loss, tx or default_tx, frozen)

    def with_classifier(params, classifier_params):
        params = dict(params)
        if shared:
            params["encoder"] = {**params["encoder"], "stack": classifier_params["stack"]}
        elif separate_features:
            params["features"] = classifier_params["stack"]
        return params

    return GenerativeModel(name=name, image_shape=arch.image_shape, latent_dim=cfg.latent_dim, init=init,
                           decode=decode, loss=loss, make_train_step=make_train_step,
                           init_state=state_initializer(init, default_tx), encode=encode,
                           uses_classifier=perceptual or shared, with_classifier=with_classifier)


@register_generative("ae")
def build_ae(cfg, image_shape, aux_classifier=False):
    return build_family("ae", cfg, image_shape, aux_classifier, deterministic=True, perceptual=False,
                        shared=False)


@register_generative("beta-vae")
def build_beta_vae(cfg, image_shape, aux_classifier=False):
    return build_family("beta-vae", cfg, image_shape, aux_classifier, deterministic=False, perceptual=False,
                        shared=False)


@register_generative("perceptual-vae")
def build_perceptual_vae(cfg, image_shape, aux_classifier=False):
    return build_family("perceptual-vae", cfg, image_shape, aux_classifier, deterministic=False,
                        perceptual=True, shared=False)


@register_generative("combined-vae")
def build_combined_vae(cfg, image_shape, aux_classifier=False):
    """`vision.perceptual_weight` 0 gives 'combined + reconstruction loss'."""
    return build_family("combined-vae", cfg, image_shape, aux_classifier, deterministic=False,
                        perceptual=cfg.perceptual_weight > 0, shared=True)
