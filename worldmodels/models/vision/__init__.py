"""Vision models (V): a registry of encoders/decoders that share one interface.

Importing the package imports every implementation, which registers itself (`vae` in the
vision registry; the autoencoder, VAE variants, two-decoder VAE and GANs in the generative
registry, and through `as_vision_model` in the vision registry too). The implementations
import `base` and `generative`, never this file, so the modules form no import circle.
"""

from worldmodels.config import VisionConfig
from worldmodels.errors import ConfigError
from worldmodels.models.vision import gan, two_decoder, vae, variants  # noqa: F401  (they register)
from worldmodels.models.vision.base import _REGISTRY, VisionModel, register_vision_model
from worldmodels.models.vision.generative import as_vision_model, build_generative, generative_model_names

# The other generative models as V at 64x64x3; a GAN has no encoder and says so when picked.
for _name in generative_model_names():
    if _name not in _REGISTRY:
        register_vision_model(_name)(lambda cfg, name=_name: as_vision_model(build_generative(name, cfg)))


def vision_model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_vision_model(config: VisionConfig) -> VisionModel:
    """Build the vision model named by `config.model`."""
    if config.model not in _REGISTRY:
        raise ConfigError(
            f"unknown vision model '{config.model}'; valid: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[config.model](config)


__all__ = ["VisionModel", "get_vision_model", "register_vision_model", "vision_model_names"]
