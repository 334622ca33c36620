"""Building blocks shared by the generative models and the experiments' classifiers.

Two architectures, chosen by the image shape (`arch_for`):

- 'paper' (64x64x3, the World Models V): Conv k4 s2 VALID x4 (`VisionConfig.encoder_channels`)
  and the paper's decoder (`vae.Decoder`: Dense -> 1x1 -> ConvTranspose k5, k5, k6, k6).
  The same layers and sizes as the paper VAE, so every model that stands in for V has V's shape.
- 'small' (any other H x W x C, e.g. 16x16x1 digits or 28x28x1 MNIST): the book's MNIST
  autoencoder stack, Conv k3 with strides 1, 2, ..., 2, 1 and 'SAME' padding
  (`encoder_channels`, e.g. 32/64/64/64), and a mirrored decoder: Dense -> the last encoder
  feature map -> ConvTranspose k3 with the same strides, each cropped to the size of the
  matching encoder map (the exact adjoint of the SAME convolution), sigmoid output.

Both use the XLA:CPU-friendly layers (`vision.layers`, default 'fast'); SAME padding is an
explicit `jnp.pad` before a VALID convolution. `ConvStack` returns every layer's activation, so
a classifier built on it gives the perceptual loss its 1st and 2nd conv activations, and the
"combined" VAE can share it with a classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.models.vision.vae import Decoder as PaperDecoder
from worldmodels.models.vision.vae import conv_layers

PAPER_SHAPE = (64, 64, 3)


@dataclass(frozen=True)
class Arch:
    """Static description of a conv stack and its mirrored decoder (hashable: a module field)."""

    image_shape: tuple[int, int, int]
    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    same_padding: bool
    decoder_channels: tuple[int, ...]
    """'paper' only: the paper decoder's first three transposed convolutions."""
    layers: str = "fast"

    @property
    def paper(self) -> bool:
        return not self.same_padding

    def sizes(self) -> list[tuple[int, int]]:
        """Spatial size before each conv layer and after the last: L + 1 entries."""
        h, w = self.image_shape[:2]
        out = [(h, w)]
        for k, s in zip(self.kernels, self.strides, strict=True):
            if self.same_padding:
                h, w = -(-h // s), -(-w // s)
            else:
                h, w = (h - k) // s + 1, (w - k) // s + 1
            if h < 1 or w < 1:
                raise ConfigError(f"images of shape {self.image_shape} are too small for "
                                  f"{len(self.kernels)} conv layers")
            out.append((h, w))
        return out

    def flat_size(self) -> int:
        h, w = self.sizes()[-1]
        return h * w * self.channels[-1]


def small_strides(n: int) -> tuple[int, ...]:
    """The book's pattern for n layers: 1, 2, ..., 2, 1 (n >= 3); 2s for fewer."""
    if n < 3:
        return (2,) * n
    return (1,) + (2,) * (n - 2) + (1,)


def arch_for(cfg: VisionConfig, image_shape: tuple[int, int, int]) -> Arch:
    """The 'paper' architecture for 64x64x3, the 'small' one for any other shape."""
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ConfigError(f"image shape must be (H, W, C), got {image_shape}")
    channels = tuple(cfg.encoder_channels)
    if not channels:
        raise ConfigError("vision.encoder_channels needs at least one value")
    conv_layers(cfg.layers)  # fail early on an unknown layer kind
    if image_shape == PAPER_SHAPE:
        if len(channels) != 4 or len(cfg.decoder_channels) != 3:
            raise ConfigError("vision.encoder_channels needs 4 values and vision.decoder_channels 3")
        arch = Arch(image_shape, channels, (4,) * 4, (2,) * 4, False, tuple(cfg.decoder_channels), cfg.layers)
    else:
        arch = Arch(image_shape, channels, (3,) * len(channels), small_strides(len(channels)), True, (),
                    cfg.layers)
    arch.sizes()  # fail early when the image is too small
    return arch


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class ConvStack(nn.Module):
    """x (B, H, W, C) -> [activation of each conv layer] (ReLU)."""

    arch: Arch

    @nn.compact
    def __call__(self, x: jax.Array, depth: int | None = None) -> list[jax.Array]:
        conv, _ = conv_layers(self.arch.layers)
        acts = []
        n = len(self.arch.channels) if depth is None else depth
        for i, (c, k, s) in enumerate(zip(self.arch.channels, self.arch.kernels, self.arch.strides, strict=True)):
            if i >= n:
                break
            if self.arch.same_padding:
                ph, pw = _same_pad(x.shape[1], k, s), _same_pad(x.shape[2], k, s)
                x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
            x = nn.relu(conv(c, (k, k), strides=(s, s), padding="VALID", name=f"conv{i}")(x))
            acts.append(x)
        return acts


class Encoder(nn.Module):
    """x -> (mu, logvar, activations). Deterministic encoders have no logvar head and return
    `DETERMINISTIC_LOGVAR`, so sampling z from a series gives mu."""

    arch: Arch
    latent_dim: int
    deterministic: bool = False

    @nn.compact
    def __call__(self, x: jax.Array):
        acts = ConvStack(self.arch, name="stack")(x)
        h = acts[-1].reshape(x.shape[0], -1)
        mu = nn.Dense(self.latent_dim, name="mu")(h)
        if self.deterministic:
            logvar = jnp.full_like(mu, DETERMINISTIC_LOGVAR)
        else:
            logvar = nn.Dense(self.latent_dim, name="logvar")(h)
        return mu, logvar, acts


DETERMINISTIC_LOGVAR = -20.0


class MirrorDecoder(nn.Module):
    """z (B, Z) -> images (B, H, W, C) in [0, 1]: the 'small' decoder (see the module doc)."""

    arch: Arch

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _, conv_t = conv_layers(self.arch.layers)
        sizes = self.arch.sizes()
        h, w = sizes[-1]
        x = nn.relu(nn.Dense(self.arch.flat_size(), name="fc")(z)).reshape(z.shape[0], h, w, self.arch.channels[-1])
        n = len(self.arch.channels)
        for j, i in enumerate(range(n - 1, -1, -1)):
            k, s = self.arch.kernels[i], self.arch.strides[i]
            out_c = self.arch.channels[i - 1] if i > 0 else self.arch.image_shape[2]
            x = conv_t(out_c, (k, k), strides=(s, s), padding="VALID", name=f"deconv{j}")(x)
            (th, tw), (ih, iw) = sizes[i], sizes[i]
            oh, ow = _same_pad(ih, k, s)[0], _same_pad(iw, k, s)[0]
            x = x[:, oh:oh + th, ow:ow + tw]
            x = nn.sigmoid(x) if i == 0 else nn.relu(x)
        return x


def make_decoder(arch: Arch) -> nn.Module:
    """The decoder (or GAN generator) of an architecture: z -> images in [0, 1]."""
    if arch.paper:
        return PaperDecoder(arch.decoder_channels, 4 * arch.channels[-1], arch.layers)
    return MirrorDecoder(arch)


class Classifier(nn.Module):
    """x -> class logits: the conv stack (shareable with a VAE encoder) and one Dense layer."""

    arch: Arch
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        acts = ConvStack(self.arch, name="stack")(x)
        return nn.Dense(self.num_classes, name="out")(acts[-1].reshape(x.shape[0], -1))


class Critic(nn.Module):
    """x -> one score per image (GAN discriminator / WGAN critic; no batch norm)."""

    arch: Arch

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        acts = ConvStack(self.arch, name="stack")(x)
        return nn.Dense(1, name="out")(acts[-1].reshape(x.shape[0], -1))[:, 0]
