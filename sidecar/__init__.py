"""opencode-sidecar: keeps opencode's provider map in step with an LLM gateway.

It also lists any runtime's models in the Anthropic Models API shape: `sidecar.models().list("cursor")`.
The SDK's names are loaded on first use (PEP 562), so the daemon never imports the client library
and the client library loads nothing of the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("sidecar.sdk"), name)
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
