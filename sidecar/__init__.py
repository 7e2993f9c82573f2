"""opencode-sidecar: keeps opencode's provider map in step with an LLM gateway.

It also lists any runtime's models in the Anthropic Models API shape: `sidecar.models().list("cursor")`.
The SDK's names are loaded on first use (PEP 562), so the daemon never imports the client library
and the client library loads nothing of the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidecar.sdk import *  # noqa: F403 (type checkers see the SDK's names here)

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The SDK's own list of public names decides, so it is not written out twice; private and
    # dunder probes (pickle, doctest, hasattr) fail without loading the SDK.
    if not name.startswith("_"):
        sdk = importlib.import_module("sidecar.sdk")
        if name in sdk.__all__:
            return getattr(sdk, name)
    raise AttributeError(f"module 'sidecar' has no attribute {name!r}")
