"""opencode-sidecar: keeps opencode's provider map in step with an LLM gateway.

It also lists any runtime's models in the Anthropic Models API shape: `sidecar.models().list("cursor")`.
"""

from sidecar.sdk import (
    RUNTIMES,
    AsyncModels,
    AuthenticationError,
    MalformedResponseError,
    ModelInfo,
    ModelList,
    Models,
    ModelsError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    amodels,
    models,
)

__version__ = "0.1.0"

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
