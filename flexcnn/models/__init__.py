"""Model registry and the built-in models."""

from flexcnn.models.registry import (
    InputRequest,
    InputSpec,
    ModelAdapter,
    available_models,
    build_model,
    input_request,
    register,
)

__all__ = [
    "InputRequest",
    "InputSpec",
    "ModelAdapter",
    "available_models",
    "build_model",
    "input_request",
    "register",
]
