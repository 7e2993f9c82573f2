"""The OpenAI-compatible `GET /v1/models` list (LiteLLM, vLLM, Ollama, Portkey) as catalog records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.catalog import ModelInfo, invalid_model_id_reason

# LiteLLM's `mode` values for models that cannot hold a chat.
NON_CHAT_MODES = frozenset(
    {
        "embedding",
        "image_generation",
        "audio_speech",
        "audio_transcription",
        "video_generation",
        "moderation",
        "realtime",
        "rerank",
    }
)


class MalformedModelList(ValueError):
    """The gateway answered, but not with a model list."""


@dataclass
class ParsedList:
    models: list[ModelInfo]
    skipped_non_chat: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # reasons, never the raw names


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def parse_model_list(payload: Any) -> ParsedList:
    """Read `{"object": "list", "data": [...]}`.

    `created` is ignored on purpose: LiteLLM answers a fixed placeholder and vLLM the time of
    the request, so it is no creation date; the catalog says "unknown" instead.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedModelList("expected a JSON object with a 'data' list")
    parsed = ParsedList(models=[])
    for entry in payload["data"]:
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        model_id = entry.get("id")
        reason = invalid_model_id_reason(model_id)
        if reason is not None:
            parsed.rejected.append(f"id {reason}")
            continue
        if entry.get("mode") in NON_CHAT_MODES:
            parsed.skipped_non_chat.append(model_id)
            continue
        parsed.models.append(
            ModelInfo(
                id=model_id,
                display_name=model_id,
                max_input_tokens=_positive_int(entry.get("max_input_tokens")),
                max_tokens=_positive_int(entry.get("max_output_tokens")),
            )
        )
    return parsed
