"""Which format a `GET <base>/models` answer is in, for a gateway configured as `auto`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.lists.litellm import LITELLM_PLACEHOLDER_CREATED

# Enough entries to tell the shape; the rest say the same.
_DETECT_SAMPLE = 100


def detect_format(payload: Any) -> str:
    """The format of a decoded `GET <base>/models` answer; "openai" when nothing more is known."""
    if isinstance(payload, list):
        return "together"
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return "openai"
    entries = [entry for entry in payload["data"][:_DETECT_SAMPLE] if isinstance(entry, dict)]

    def some(test: Callable[[dict[str, Any]], bool]) -> bool:
        return any(test(entry) for entry in entries)

    if some(lambda e: e.get("type") == "model" and ("display_name" in e or "created_at" in e)):
        return "anthropic"
    # Together's pricing is {"input", "output"} per million; OpenRouter's {"prompt", "completion"}.
    if some(lambda e: "context_length" in e and _together_pricing(e.get("pricing"))):
        return "together"
    if some(lambda e: "architecture" in e or ("context_length" in e and isinstance(e.get("pricing"), dict))):
        return "openrouter"
    if some(lambda e: "max_model_len" in e):
        return "vllm"
    if some(lambda e: e.get("owned_by") == "library"):
        return "ollama"
    if some(lambda e: "mode" in e or e.get("created") == LITELLM_PLACEHOLDER_CREATED):
        return "litellm"
    if some(lambda e: e.get("owned_by") == "organization_owner" or "max_context_length" in e):
        return "lmstudio"
    return "openai"


def _together_pricing(value: Any) -> bool:
    return isinstance(value, dict) and "input" in value and "output" in value and "prompt" not in value
