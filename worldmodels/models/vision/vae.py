"""V: the World Models convolutional VAE (64x64x3 -> z).

Encoder: Conv 32/64/128/256, kernel 4, stride 2, ReLU -> 2x2x256 -> Dense mu, Dense logvar.
Decoder: Dense 1024 -> 1x1x1024 -> ConvTranspose 128 (k5), 64 (k5), 32 (k6), 3 (k6),
stride 2, ReLU, sigmoid output -> 64x64x3. Channel counts come from `VisionConfig`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.losses import vae_loss_terms
from worldmodels.models.vision.base import VisionModel, register_vision_model

DECODER_KERNELS = (5, 5, 6, 6)
FRAME_SIZE = 64


def conv_layers(kind: str) -> tuple[type[nn.Module], type[nn.Module]]:
    """(Conv, ConvTranspose) classes: flax.linen's, or the XLA:CPU-friendly ones, which have
    the same parameters and compute the same function (tests pin this)."""
    if kind == "flax":
        return nn.Conv, nn.ConvTranspose
    if kind == "fast":
        from worldmodels.models.vision import layers

        return layers.Conv, layers.ConvTranspose
    raise ConfigError(f"unknown vision.layers '{kind}'; valid: fast, flax")


class Encoder(nn.Module):
    channels: tuple[int, ...]
    latent_dim: int
    layers: str = "fast"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, 64, 64, 3) in [0, 1] -> mu, logvar (B, Z)."""
        conv, _ = conv_layers(self.layers)
        for i, c in enumerate(self.channels):
            x = nn.relu(conv(c, (4, 4), strides=(2, 2), padding="VALID", name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        mu = nn.Dense(self.latent_dim, name="mu")(x)
        logvar = nn.Dense(self.latent_dim, name="logvar")(x)
        return mu, logvar


class Decoder(nn.Module):
    channels: tuple[int, ...]
    dense: int
    layers: str = "fast"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """z (B, Z) -> frames (B, 64, 64, 3) in [0, 1]."""
        _, conv_t = conv_layers(self.layers)
        x = nn.Dense(self.dense, name="fc")(z).reshape(z.shape[0], 1, 1, self.dense)
        filters = (*self.channels, 3)
        for i, (c, k) in enumerate(zip(filters, DECODER_KERNELS, strict=True)):
            x = conv_t(c, (k, k), strides=(2, 2), padding="VALID", name=f"deconv{i}")(x)
            x = nn.sigmoid(x) if i == len(filters) - 1 else nn.relu(x)
        return x


class VAE(nn.Module):
    encoder_channels: tuple[int, ...]
    decoder_channels: tuple[int, ...]
    latent_dim: int
    layers: str = "fast"

    def setup(self):
        self.encoder = Encoder(self.encoder_channels, self.latent_dim, self.layers)
        self.decoder = Decoder(self.decoder_channels, 4 * self.encoder_channels[-1], self.layers)

    def __call__(self, x: jax.Array, key: jax.Array):
        """x (B, 64, 64, 3) -> (reconstruction, mu, logvar) with z = mu + sigma * eps."""
        mu, logvar = self.encoder(x)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
        return self.decoder(z), mu, logvar

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)


def check_frame_size(config_frame_size: int) -> None:
    if config_frame_size != FRAME_SIZE:
        raise ConfigError(f"the VAE takes {FRAME_SIZE}x{FRAME_SIZE} frames, env.frame_size is "
                          f"{config_frame_size}")


@register_vision_model("vae")
def make_vae(config: VisionConfig) -> VisionModel:
    if len(config.encoder_channels) != 4 or len(config.decoder_channels) != 3:
        raise ConfigError("vision.encoder_channels needs 4 values and vision.decoder_channels 3")
    module = VAE(tuple(config.encoder_channels), tuple(config.decoder_channels),
                 config.latent_dim, config.layers)
    conv_layers(config.layers)  # fail early on an unknown name

    def init(key):
        x = jnp.zeros((1, FRAME_SIZE, FRAME_SIZE, 3), jnp.float32)
        return module.init(key, x, key)["params"]

    def encode(params, frames):
        return module.apply({"params": params}, frames, method=VAE.encode)

    def decode(params, z):
        return module.apply({"params": params}, z, method=VAE.decode)

    def loss(params, frames, key):
        recon, mu, logvar = module.apply({"params": params}, frames, key)
        total, r_loss, kl = vae_loss_terms(recon, frames, mu, logvar, config.kl_tolerance,
                                           config.kl_weight)
        return total, {"loss": total, "recon": r_loss, "kl": kl}

    return VisionModel(name="vae", latent_dim=config.latent_dim, frame_size=FRAME_SIZE,
                       init=init, encode=encode, decode=decode, loss=loss)


