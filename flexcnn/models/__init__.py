"""Model registry and the built-in models.

Each model file registers its kinds when imported; the imports at the bottom
fill the registry. A new model is one file (copy ``flexible_cnn.py``) and one
line here.
"""

# The model files, imported for their registrations: one line per model.
from flexcnn.models import flexible_cnn, pretrained  # noqa: F401
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
