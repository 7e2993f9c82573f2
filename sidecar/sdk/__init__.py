"""List any runtime's models in the Anthropic Models API shape: `models().list("anthropic")`."""

from sidecar.catalog import ModelInfo, ModelList
from sidecar.sdk.client import AsyncModels, Models, amodels, models
from sidecar.sdk.errors import (
    AuthenticationError,
    MalformedResponseError,
    ModelsError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from sidecar.sdk.runtimes import RUNTIMES

__all__ = [
    "RUNTIMES",
    "AsyncModels",
    "AuthenticationError",
    "MalformedResponseError",
    "ModelInfo",
    "ModelList",
    "Models",
    "ModelsError",
    "NotFoundError",
    "RateLimitedError",
    "UnavailableError",
    "amodels",
    "models",
]
