"""LiteLLM's `GET /model/info`: the metadata its `/models` list lacks, and which names are not chat models."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pydantic import ValidationError

from sidecar.catalog import ModelCost, invalid_model_id_reason
from sidecar.lists.entries import ParsedList, data_list, id_problem
from sidecar.lists.values import (
    MAX_NAME_LENGTH,
    as_dict,
    chat_mode,
    cost,
    flag,
    name,
    per_million,
    positive_int,
    strings,
)

# LiteLLM answers this `created` for every model: it dates nothing.
LITELLM_PLACEHOLDER_CREATED = 1677610602

# LiteLLM's special names for "every model of the team / the proxy" (its SpecialModelNames): a
# key's model list may hold one, and a list read with such a key may show it. Never a model.
LITELLM_SENTINELS = frozenset({"all-team-models", "all-proxy-models", "no-default-models"})
# `GET /v1/models?return_wildcard_routes=true` lists each wildcard route (`openai/*`) beside the
# models it expands to; other gateways ignore the parameter.
WILDCARD_ROUTES_PARAM = {"return_wildcard_routes": "true"}
MAX_ROUTES = 100


@dataclass(frozen=True)
class LiteLLMModelInfo:
    """What `/model/info` says of one model name; None where it says nothing usable."""

    mode: str | None = None
    display_name: str | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    cost: ModelCost | None = None
    input_modalities: tuple[str, ...] | None = None
    tool_call: bool | None = None
    reasoning: bool | None = None

    @property
    def chats(self) -> bool:
        return chat_mode(self.mode)

    def filled_from(self, other: LiteLLMModelInfo) -> LiteLLMModelInfo:
        """This one, with the fields it lacks taken from another deployment of the same name."""
        gaps = {f.name: getattr(other, f.name) for f in fields(self) if getattr(self, f.name) is None}
        return replace(self, **gaps)


@dataclass
class LiteLLMInfo:
    models: dict[str, LiteLLMModelInfo] = field(default_factory=dict)
    access_groups: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)  # reasons, never the raw names


def _litellm_details(info: dict[str, Any]) -> LiteLLMModelInfo:
    # Per token in LiteLLM; per million in the catalog.
    price = cost(
        per_million(info.get("input_cost_per_token")),
        per_million(info.get("output_cost_per_token")),
        per_million(info.get("cache_read_input_token_cost")),
        per_million(info.get("cache_creation_input_token_cost")),
    )
    vision, pdf, audio = (
        flag(info.get(key)) for key in ("supports_vision", "supports_pdf_input", "supports_audio_input")
    )
    inputs = None
    if (vision, pdf, audio) != (None, None, None):
        inputs = ("text",) + (("audio",) if audio else ()) + (("image",) if vision else ()) + (("pdf",) if pdf else ())
    mode = info.get("mode")
    display_name = info.get("display_name")
    return LiteLLMModelInfo(
        mode=mode if isinstance(mode, str) and len(mode) <= MAX_NAME_LENGTH else None,
        display_name=name(display_name, "") or None,
        max_input_tokens=positive_int(info.get("max_input_tokens")),
        # `max_tokens` is LiteLLM's older name for the output limit.
        max_output_tokens=positive_int(info.get("max_output_tokens")) or positive_int(info.get("max_tokens")),
        cost=price,
        input_modalities=inputs,
        tool_call=flag(info.get("supports_function_calling")),
        reasoning=flag(info.get("supports_reasoning")),
    )


def parse_litellm_model_info(payload: Any) -> LiteLLMInfo:
    """LiteLLM's `GET /model/info`: `{"data": [{"model_name", "litellm_params", "model_info"}]}`.

    Only `model_name` and `model_info` are read: `litellm_params` holds the upstream keys.
    A name served by several deployments gets the first value each field has among them.
    """
    parsed = LiteLLMInfo()
    for entry in data_list(payload):
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        info = as_dict(entry.get("model_info"))
        for group in strings(info.get("access_groups")):
            if invalid_model_id_reason(group) is None:
                parsed.access_groups.add(group)
        model_name = entry.get("model_name")
        if (reason := id_problem(model_name)) is not None:
            parsed.rejected.append(f"model_name {reason.removeprefix('id ')}")
            continue
        try:
            details = _litellm_details(info)
        except ValidationError:
            parsed.rejected.append("model_info has values a catalog record cannot hold")
            continue
        known = parsed.models.get(model_name)
        parsed.models[model_name] = details if known is None else known.filled_from(details)
    return parsed


def wildcard_routes(payload: Any) -> tuple[str, ...]:
    """The wildcard routes a LiteLLM list names (`openai/*`, `anthropic/claude-*`): the models the
    gateway serves without listing them. At most MAX_ROUTES, each a usable model id but for its `*`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        return ()
    routes: dict[str, None] = {}
    for entry in payload["data"]:
        route = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(route, str) and "*" in route and invalid_model_id_reason(route) is None:
            routes[route] = None
            if len(routes) >= MAX_ROUTES:
                break
    return tuple(routes)


def not_a_model(model_id: str, access_groups: Collection[str]) -> bool:
    """A name LiteLLM lists that no request can use: a sentinel, or an access group's name."""
    return model_id in LITELLM_SENTINELS or model_id in access_groups


def without_sentinels(parsed: ParsedList, access_groups: Collection[str] = ()) -> ParsedList:
    """The list without LiteLLM's sentinels and access-group names, each counted in `rejected`."""
    kept = [model for model in parsed.models if not not_a_model(model.id, access_groups)]
    if len(kept) == len(parsed.models):
        return parsed
    dropped = len(parsed.models) - len(kept)
    rejected = [*parsed.rejected, *["id names an access group or sentinel, not a model"] * dropped]
    # Not counted as listed either: it would read as models SIDECAR_MAX_MODELS left out.
    listed = None if parsed.listed is None else parsed.listed - dropped
    return replace(parsed, models=kept, rejected=rejected, listed=listed)


def enrich_with_litellm_info(parsed: ParsedList, info: LiteLLMInfo) -> ParsedList:
    """The list with what `/model/info` adds: metadata the list lacks (the list's own values win),
    non-chat models, sentinels and access-group names taken out."""
    parsed = without_sentinels(parsed, info.access_groups)
    enriched = ParsedList(
        models=[],
        skipped_non_chat=list(parsed.skipped_non_chat),
        rejected=list(parsed.rejected),
        reserved=list(parsed.reserved),
        listed=parsed.listed,
        trimmed=parsed.trimmed,
    )
    for model in parsed.models:
        details = info.models.get(model.id)
        if details is None:
            enriched.models.append(model)
            continue
        if not details.chats:
            enriched.skipped_non_chat.append(model.id)
            continue
        known = {
            "display_name": details.display_name if model.display_name == model.id else None,
            "max_input_tokens": details.max_input_tokens,
            "max_tokens": details.max_output_tokens,
            "cost": details.cost,
            "input_modalities": details.input_modalities,
            "tool_call": details.tool_call,
            "reasoning": details.reasoning,
        }
        gaps = {
            field_name: value
            for field_name, value in known.items()
            if value is not None and (field_name == "display_name" or getattr(model, field_name) is None)
        }
        enriched.models.append(model.model_copy(update=gaps))
    return enriched
