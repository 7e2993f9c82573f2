"""Values from an untrusted list: each reader keeps a value only when it has the type and range the
catalog needs, and otherwise says "unknown" (None). None of these raises."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from sidecar.catalog import UNKNOWN_DATE, Modality, ModelCost

# opencode reads its config in JavaScript: a larger whole number is not one it can hold exactly.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_LENGTH = 256
# Prices arrive as text from some gateways; a longer one is not a price.
MAX_NUMBER_TEXT = 64

# The modalities opencode accepts, in the order the catalog lists them.
_MODALITY_ORDER: tuple[str, ...] = get_args(Modality)

_datetimes: TypeAdapter[datetime] = TypeAdapter(datetime)


def positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SAFE_INTEGER:
        return None
    return value


def number(value: Any) -> float | None:
    """A finite, non-negative number, given as a JSON number or as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_TEXT:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    if not math.isfinite(result) or result < 0:
        return None
    return result


def per_million(per_token: Any) -> float | None:
    """A price per token as a price per million, without float noise (3e-06 -> 3.0, not 2.9999...)."""
    price = number(per_token)
    if price is None:
        return None
    scaled = float(Decimal(repr(price)) * 1_000_000)
    return scaled if math.isfinite(scaled) else None


def cost(
    input: float | None, output: float | None, cache_read: float | None = None, cache_write: float | None = None
) -> ModelCost | None:
    """opencode's cost needs both the input and the output price; without either there is none."""
    if input is None or output is None:
        return None
    return ModelCost(input=input, output=output, cache_read=cache_read, cache_write=cache_write)


def unix_time(value: Any) -> datetime | None:
    """A real creation time in seconds since the epoch, or None for zero, junk or out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 253402300800:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def rfc3339(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        parsed = _datetimes.validate_python(value)
    except ValidationError:
        return None
    # A date without a zone is taken as UTC, as Anthropic's are.
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None if parsed == UNKNOWN_DATE else parsed


def dated(created: datetime | None) -> dict[str, Any]:
    """The created_at and release_date fields for a real creation time; nothing for an unknown one."""
    if created is None:
        return {}
    return {"created_at": created, "release_date": release_date(created)}


def release_date(created: datetime) -> date:
    return created.astimezone(timezone.utc).date()


def name(value: Any, model_id: str) -> str:
    """The source's name when it is usable text, else the id."""
    if isinstance(value, str) and value.strip() and value.isprintable() and len(value) <= MAX_NAME_LENGTH:
        return value.strip()
    return model_id


def modalities(values: Any) -> tuple[str, ...] | None:
    """The modalities opencode knows, in a fixed order; others ("file", "embeddings") are dropped,
    and a list with none of them says nothing (None)."""
    if not isinstance(values, list):
        return None
    present = {value for value in values if isinstance(value, str)}
    known = tuple(kind for kind in _MODALITY_ORDER if kind in present)
    return known or None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def strings(value: Any) -> set[str]:
    return {item for item in value if isinstance(item, str)} if isinstance(value, list) else set()


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


# LiteLLM's `mode` values for models that hold a chat; every other mode (embedding, rerank, ...) cannot.
CHAT_MODES = frozenset({"chat", "completion", "responses"})
# The non-chat modes LiteLLM 1.106.2 knows, for reference; an unknown mode is non-chat too.
NON_CHAT_MODES = frozenset(
    {
        "embedding",
        "image_generation",
        "image_edit",
        "audio_speech",
        "audio_transcription",
        "video_generation",
        "moderation",
        "realtime",
        "rerank",
        "ocr",
        "search",
        "evaluation",
        "extraction",
        "guardrail",
        "vector_store",
    }
)


def chat_mode(mode: Any) -> bool:
    """LiteLLM's `mode`: absent for models it doesn't know, which may well chat."""
    return not isinstance(mode, str) or mode in CHAT_MODES
