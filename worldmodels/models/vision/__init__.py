"""Vision models (V): a registry of encoders/decoders that share one interface."""

from worldmodels.models.vision.base import (
    VisionModel,
    get_vision_model,
    register_vision_model,
    vision_model_names,
)

__all__ = ["VisionModel", "get_vision_model", "register_vision_model", "vision_model_names"]
