"""The Anthropic Models API's list, as Anthropic, an Anthropic-shaped gateway and the sidecar answer it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from sidecar.catalog import ModelInfo, reserved_key_reason
from sidecar.lists.entries import MalformedModelList, ParsedList, data_list, id_problem
from sidecar.lists.values import as_dict, dated, flag, name, positive_int, rfc3339

# The `anthropic-version` header both the gateway poll and the SDK send.
ANTHROPIC_VERSION = "2023-06-01"
# Anthropic's largest page, and the sidecar's.
MAX_PAGE = 1000

LIFECYCLES = frozenset({"active", "deprecated", "retired"})


def _supported(capabilities: dict[str, Any], capability: str) -> bool | None:
    return flag(as_dict(capabilities.get(capability)).get("supported"))


def anthropic_model(entry: Any, fallback_name: Callable[[str], str] | None = None) -> ModelInfo | str:
    """One Anthropic model object, or why it is not one. Unknown fields are ignored.

    `fallback_name` names a model whose entry has no usable display name; by default the id.
    """
    if not isinstance(entry, dict):
        return "entry is not an object"
    if entry.get("type", "model") != "model":
        return "type is not 'model'"
    model_id = entry.get("id")
    if (reason := id_problem(model_id)) is not None:
        return reason
    display_name = name(entry.get("display_name"), model_id)
    if display_name == model_id and fallback_name is not None and entry.get("display_name") != model_id:
        display_name = fallback_name(model_id)
    capabilities = as_dict(entry.get("capabilities"))
    image, pdf = _supported(capabilities, "image_input"), _supported(capabilities, "pdf_input")
    inputs = None
    if image is not None or pdf is not None:
        inputs = ("text",) + (("image",) if image else ()) + (("pdf",) if pdf else ())
    lifecycle = entry.get("lifecycle")
    created = rfc3339(entry.get("created_at"))
    try:
        return ModelInfo(
            id=model_id,
            display_name=display_name,
            max_input_tokens=positive_int(entry.get("max_input_tokens")),
            max_tokens=positive_int(entry.get("max_tokens")),
            # A lifecycle this code doesn't know yet is not a reason to hide the model.
            lifecycle=lifecycle if isinstance(lifecycle, str) and lifecycle in LIFECYCLES else "active",
            input_modalities=inputs,
            reasoning=_supported(capabilities, "thinking"),
            **dated(created),
        )
    except ValidationError:
        return "entry has values a catalog record cannot hold"


def parse_anthropic_page(
    payload: Any, *, fallback_name: Callable[[str], str] | None = None
) -> tuple[ParsedList, bool, str | None]:
    """`{"data": [...], "has_more", "first_id", "last_id"}`: the page, whether more follow, and
    the id to ask `after_id` for (the last model's when the page doesn't say)."""
    entries = data_list(payload)
    has_more = payload.get("has_more", False)
    last_id = payload.get("last_id")
    if not isinstance(has_more, bool) or not (last_id is None or isinstance(last_id, str)):
        raise MalformedModelList("'has_more' must be a boolean and 'last_id' a string or null")
    parsed = ParsedList(models=[])
    for entry in entries:
        if isinstance(entry, dict) and reserved_key_reason(entry.get("id")) is not None:
            parsed.reserved.append(entry["id"])
            continue
        model = anthropic_model(entry, fallback_name)
        if isinstance(model, str):
            parsed.rejected.append(model)
        else:
            parsed.models.append(model)
    if last_id is None and parsed.models:
        last_id = parsed.models[-1].id
    return parsed, has_more, last_id
