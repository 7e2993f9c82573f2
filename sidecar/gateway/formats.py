"""Every gateway's model list, read into catalog records: pure functions of decoded JSON.

Everything a gateway sends is untrusted. A reader keeps a value only when it has the type and
range the catalog needs and otherwise says "unknown" (None); an entry it cannot use is counted
in `rejected` by reason, never by its text. Nothing here raises anything but MalformedModelList,
and its messages name the shape expected, never what was sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from sidecar.catalog import (
    UNKNOWN_DATE,
    Modality,
    ModelCost,
    ModelInfo,
    NewestModels,
    invalid_model_id_reason,
    reserved_key_reason,
)

FORMATS = ("auto", "openai", "litellm", "openrouter", "portkey", "together", "vllm", "ollama", "lmstudio", "anthropic")

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

# LiteLLM answers this `created` for every model: it dates nothing.
LITELLM_PLACEHOLDER_CREATED = 1677610602
# opencode reads its config in JavaScript: a larger whole number is not one it can hold exactly.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_LENGTH = 256
# Prices arrive as text from some gateways; a longer one is not a price.
MAX_NUMBER_TEXT = 64

TOGETHER_CHAT_TYPES = frozenset({"chat", "language", "code"})
LMSTUDIO_CHAT_TYPES = frozenset({"llm", "vlm"})

# The modalities opencode accepts, in the order the catalog lists them.
_MODALITY_ORDER: tuple[str, ...] = get_args(Modality)

_datetimes: TypeAdapter[datetime] = TypeAdapter(datetime)


class MalformedModelList(ValueError):
    """The gateway answered, but not with a model list. The message never quotes the answer."""


@dataclass
class ParsedList:
    models: list[ModelInfo]
    skipped_non_chat: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # reasons, never the raw names
    # Ids opencode's config cannot hold (catalog.OPENCODE_RESERVED_KEYS), dropped: safe to name,
    # each is one of a dozen names fixed by JavaScript.
    reserved: list[str] = field(default_factory=list)
    # Read through a NewestModels: how many models its globs wanted, of which `models` holds the newest.
    listed: int | None = None


# --- Values: untrusted in, clean or None out --------------------------------------------------


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SAFE_INTEGER:
        return None
    return value


def _number(value: Any) -> float | None:
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
        number = float(value)
    except OverflowError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _per_million(per_token: Any) -> float | None:
    """A price per token as a price per million, without float noise (3e-06 -> 3.0, not 2.9999...)."""
    number = _number(per_token)
    if number is None:
        return None
    scaled = float(Decimal(repr(number)) * 1_000_000)
    return scaled if math.isfinite(scaled) else None


def _cost(
    input: float | None, output: float | None, cache_read: float | None = None, cache_write: float | None = None
) -> ModelCost | None:
    """opencode's cost needs both the input and the output price; without either there is none."""
    if input is None or output is None:
        return None
    return ModelCost(input=input, output=output, cache_read=cache_read, cache_write=cache_write)


def _unix_time(value: Any) -> datetime | None:
    """A real creation time in seconds since the epoch, or None for zero, junk or out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 253402300800:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _rfc3339(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        parsed = _datetimes.validate_python(value)
    except ValidationError:
        return None
    # A date without a zone is taken as UTC, as Anthropic's are.
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None if parsed == UNKNOWN_DATE else parsed


def _dated(created: datetime | None) -> dict[str, Any]:
    """The created_at and release_date fields for a real creation time; nothing for an unknown one."""
    if created is None:
        return {}
    return {"created_at": created, "release_date": _release_date(created)}


def _release_date(created: datetime) -> date:
    return created.astimezone(timezone.utc).date()


def _name(value: Any, model_id: str) -> str:
    """The source's name when it is usable text, else the id."""
    if isinstance(value, str) and value.strip() and value.isprintable() and len(value) <= MAX_NAME_LENGTH:
        return value.strip()
    return model_id


def _modalities(values: Any) -> tuple[str, ...] | None:
    """The modalities opencode knows, in a fixed order; others ("file", "embeddings") are dropped,
    and a list with none of them says nothing (None)."""
    if not isinstance(values, list):
        return None
    present = {value for value in values if isinstance(value, str)}
    known = tuple(kind for kind in _MODALITY_ORDER if kind in present)
    return known or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> set[str]:
    return {item for item in value if isinstance(item, str)} if isinstance(value, list) else set()


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _chat_mode(mode: Any) -> bool:
    """LiteLLM's `mode`: absent for models it doesn't know, which may well chat."""
    return not isinstance(mode, str) or mode in CHAT_MODES


def _id_problem(model_id: Any) -> str | None:
    if (reason := invalid_model_id_reason(model_id)) is not None:
        return f"id {reason}"
    if "*" in model_id:
        return "id is a wildcard route, not a model"
    return None


# A reader turns one entry with a valid id into a record, or None for a model that cannot chat.
Reader = Callable[[dict[str, Any], str], ModelInfo | None]


def _read_entries(
    entries: Iterable[Any], read: Reader, id_key: str = "id", keep: NewestModels | None = None
) -> ParsedList:
    """Every entry read; with `keep`, the models go there (bounded) and `models` is what it kept."""
    parsed = ParsedList(models=[])
    add = parsed.models.append if keep is None else keep.add
    for entry in entries:
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        model_id = entry.get(id_key)
        if reserved_key_reason(model_id) is not None:
            parsed.reserved.append(model_id)
            continue
        if (reason := _id_problem(model_id)) is not None:
            parsed.rejected.append(reason)
            continue
        try:
            model = read(entry, model_id)
        except ValidationError:
            # The readers hand over only clean values; this is the net under them, not a path.
            parsed.rejected.append("entry has values a catalog record cannot hold")
            continue
        if model is None:
            parsed.skipped_non_chat.append(model_id)
        else:
            add(model)
    if keep is not None:
        parsed.models, parsed.listed = keep.candidates(), keep.listed
    return parsed


def _data_list(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedModelList("expected a JSON object with a 'data' list")
    return payload["data"]


# --- GET <base>/models, per format --------------------------------------------------------------


def _openai_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    """The OpenAI shape, with LiteLLM's extras where present.

    `created` is ignored on purpose: LiteLLM answers a fixed placeholder, vLLM the time of the
    request and Ollama the file's time, so it is no creation date; the catalog says "unknown".
    """
    if not _chat_mode(entry.get("mode")):
        return None
    return ModelInfo(
        id=model_id,
        display_name=model_id,
        max_input_tokens=_positive_int(entry.get("max_input_tokens")),
        max_tokens=_positive_int(entry.get("max_output_tokens")),
    )


def _vllm_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    model = _openai_model(entry, model_id)
    context = _positive_int(entry.get("max_model_len"))
    if model is None or model.max_input_tokens is not None or context is None:
        return model
    return model.model_copy(update={"max_input_tokens": context})


def _is_embedding_name(model_id: str) -> bool:
    # Local runners list embedding models beside chat ones and say nothing else about them.
    return "embed" in model_id.lower()


def _local_openai_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    """Ollama's and LM Studio's `/v1/models`: the OpenAI shape, with embedding models beside chat ones."""
    return None if _is_embedding_name(model_id) else _openai_model(entry, model_id)


def _openrouter_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    architecture = _dict(entry.get("architecture"))
    inputs, outputs = architecture.get("input_modalities"), architecture.get("output_modalities")
    legacy = architecture.get("modality")
    if not isinstance(outputs, list) and isinstance(legacy, str) and "->" in legacy:
        # Older answers say "text+image->text" instead of the two lists.
        before, _, after = legacy.partition("->")
        inputs, outputs = before.split("+"), after.split("+")
    output_modalities = _modalities(outputs)
    said_outputs = _strings(outputs)
    if said_outputs and "text" not in said_outputs:
        return None  # image generators, embedders: nothing to chat with
    top = _dict(entry.get("top_provider"))
    pricing = _dict(entry.get("pricing"))
    parameters = entry.get("supported_parameters")
    said = isinstance(parameters, list)
    named = _strings(parameters)
    return ModelInfo(
        id=model_id,
        display_name=_name(entry.get("name"), model_id),
        max_input_tokens=_positive_int(entry.get("context_length")) or _positive_int(top.get("context_length")),
        max_tokens=_positive_int(top.get("max_completion_tokens")),
        cost=_cost(
            _per_million(pricing.get("prompt")),
            _per_million(pricing.get("completion")),
            _per_million(pricing.get("input_cache_read")),
            _per_million(pricing.get("input_cache_write")),
        ),
        input_modalities=_modalities(inputs),
        output_modalities=output_modalities,
        tool_call=("tools" in named) if said else None,
        reasoning=bool(named & {"reasoning", "include_reasoning"}) if said else None,
        **_dated(_unix_time(entry.get("created"))),
    )


def _together_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    kind = entry.get("type")
    if isinstance(kind, str) and kind not in TOGETHER_CHAT_TYPES:
        return None
    pricing = _dict(entry.get("pricing"))
    return ModelInfo(
        id=model_id,
        display_name=_name(entry.get("display_name"), model_id),
        max_input_tokens=_positive_int(entry.get("context_length")),
        # Together's prices are per million tokens already.
        cost=_cost(_number(pricing.get("input")), _number(pricing.get("output"))),
        **_dated(_unix_time(entry.get("created"))),
    )


def _lmstudio_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    """LM Studio's `/api/v0/models` entry; its `/v1/models` entries lack `type` and are told by name."""
    kind = entry.get("type")
    if not isinstance(kind, str):
        return _local_openai_model(entry, model_id)
    if kind not in LMSTUDIO_CHAT_TYPES:
        return None
    capabilities = entry.get("capabilities")
    return ModelInfo(
        id=model_id,
        display_name=model_id,
        max_input_tokens=_positive_int(entry.get("max_context_length")),
        input_modalities=("text", "image") if kind == "vlm" else ("text",),
        # LM Studio marks the models trained for tools; the others may still follow a prompt.
        tool_call=True if "tool_use" in _strings(capabilities) else None,
    )


_LIST_READERS: dict[str, Reader] = {
    "openai": _openai_model,
    "portkey": _openai_model,
    "litellm": _openai_model,
    "vllm": _vllm_model,
    "ollama": _local_openai_model,
    "lmstudio": _lmstudio_model,
    "openrouter": _openrouter_model,
    "together": _together_model,
}


def parse_models(fmt: str, payload: Any, keep: NewestModels | None = None) -> ParsedList:
    """The answer of `GET <base>/models` in format `fmt` (a FORMATS name but "auto" and "anthropic")."""
    read = _LIST_READERS.get(fmt)
    if read is None:
        # Our own configuration, not the gateway's answer: a programming error.
        raise ValueError(f"no list parser for format {fmt!r}; known: {', '.join(_LIST_READERS)}")
    if fmt == "together":
        if isinstance(payload, list):
            return _read_entries(payload, read, keep=keep)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise MalformedModelList("expected a JSON array of models, or an object with a 'data' list")
    return _read_entries(_data_list(payload), read, keep=keep)


def parse_model_list(payload: Any) -> ParsedList:
    """The OpenAI shape `{"object": "list", "data": [...]}`: `parse_models("openai", ...)`."""
    return parse_models("openai", payload)


# --- The local runners' own routes ----------------------------------------------------------


def _ollama_tag(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    details = _dict(entry.get("details"))
    families = _strings(details.get("families")) | _strings([details.get("family")])
    # Ollama's embedding models are BERT descendants (bert, nomic-bert, jina-bert, xlm-roberta);
    # no chat model is.
    if _is_embedding_name(model_id) or any("bert" in family.lower() for family in families):
        return None
    # `modified_at` is when the file was pulled, not when the model was made.
    return ModelInfo(id=model_id, display_name=model_id)


def parse_ollama_tags(payload: Any, keep: NewestModels | None = None) -> ParsedList:
    """Ollama's `GET /api/tags`: `{"models": [{"name", "model", "modified_at", "details"}]}`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise MalformedModelList("expected a JSON object with a 'models' list")
    entries = [
        {**entry, "name": entry.get("model")} if isinstance(entry, dict) and "name" not in entry else entry
        for entry in payload["models"]
    ]
    return _read_entries(entries, _ollama_tag, id_key="name", keep=keep)


def parse_lmstudio_models(payload: Any, keep: NewestModels | None = None) -> ParsedList:
    """LM Studio's `GET /api/v0/models`: `type` llm or vlm chats, embeddings doesn't."""
    return _read_entries(_data_list(payload), _lmstudio_model, keep=keep)


# --- The Anthropic shape --------------------------------------------------------------------

LIFECYCLES = frozenset({"active", "deprecated", "retired"})


def _supported(capabilities: dict[str, Any], name: str) -> bool | None:
    return _flag(_dict(capabilities.get(name)).get("supported"))


def anthropic_model(entry: Any, fallback_name: Callable[[str], str] | None = None) -> ModelInfo | str:
    """One Anthropic model object, or why it is not one. Unknown fields are ignored.

    `fallback_name` names a model whose entry has no usable display name; by default the id.
    """
    if not isinstance(entry, dict):
        return "entry is not an object"
    if entry.get("type", "model") != "model":
        return "type is not 'model'"
    model_id = entry.get("id")
    if (reason := _id_problem(model_id)) is not None:
        return reason
    display_name = _name(entry.get("display_name"), model_id)
    if display_name == model_id and fallback_name is not None and entry.get("display_name") != model_id:
        display_name = fallback_name(model_id)
    capabilities = _dict(entry.get("capabilities"))
    image, pdf = _supported(capabilities, "image_input"), _supported(capabilities, "pdf_input")
    inputs = None
    if image is not None or pdf is not None:
        inputs = ("text",) + (("image",) if image else ()) + (("pdf",) if pdf else ())
    lifecycle = entry.get("lifecycle")
    created = _rfc3339(entry.get("created_at"))
    try:
        return ModelInfo(
            id=model_id,
            display_name=display_name,
            max_input_tokens=_positive_int(entry.get("max_input_tokens")),
            max_tokens=_positive_int(entry.get("max_tokens")),
            # A lifecycle this code doesn't know yet is not a reason to hide the model.
            lifecycle=lifecycle if isinstance(lifecycle, str) and lifecycle in LIFECYCLES else "active",
            input_modalities=inputs,
            reasoning=_supported(capabilities, "thinking"),
            **_dated(created),
        )
    except ValidationError:
        return "entry has values a catalog record cannot hold"


def parse_anthropic_page(
    payload: Any, *, fallback_name: Callable[[str], str] | None = None
) -> tuple[ParsedList, bool, str | None]:
    """`{"data": [...], "has_more", "first_id", "last_id"}`: the page, whether more follow, and
    the id to ask `after_id` for (the last model's when the page doesn't say)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise MalformedModelList("expected a JSON object with a 'data' list")
    has_more = payload.get("has_more", False)
    last_id = payload.get("last_id")
    if not isinstance(has_more, bool) or not (last_id is None or isinstance(last_id, str)):
        raise MalformedModelList("'has_more' must be a boolean and 'last_id' a string or null")
    parsed = ParsedList(models=[])
    for entry in payload["data"]:
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


# --- LiteLLM's /model/info ------------------------------------------------------------------


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
        return _chat_mode(self.mode)

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
    cost = _cost(
        _per_million(info.get("input_cost_per_token")),
        _per_million(info.get("output_cost_per_token")),
        _per_million(info.get("cache_read_input_token_cost")),
        _per_million(info.get("cache_creation_input_token_cost")),
    )
    vision, pdf, audio = (
        _flag(info.get(key)) for key in ("supports_vision", "supports_pdf_input", "supports_audio_input")
    )
    inputs = None
    if (vision, pdf, audio) != (None, None, None):
        inputs = ("text",) + (("audio",) if audio else ()) + (("image",) if vision else ()) + (("pdf",) if pdf else ())
    mode = info.get("mode")
    display_name = info.get("display_name")
    return LiteLLMModelInfo(
        mode=mode if isinstance(mode, str) and len(mode) <= MAX_NAME_LENGTH else None,
        display_name=_name(display_name, "") or None,
        max_input_tokens=_positive_int(info.get("max_input_tokens")),
        # `max_tokens` is LiteLLM's older name for the output limit.
        max_output_tokens=_positive_int(info.get("max_output_tokens")) or _positive_int(info.get("max_tokens")),
        cost=cost,
        input_modalities=inputs,
        tool_call=_flag(info.get("supports_function_calling")),
        reasoning=_flag(info.get("supports_reasoning")),
    )


def parse_litellm_model_info(payload: Any) -> LiteLLMInfo:
    """LiteLLM's `GET /model/info`: `{"data": [{"model_name", "litellm_params", "model_info"}]}`.

    Only `model_name` and `model_info` are read: `litellm_params` holds the upstream keys.
    A name served by several deployments gets the first value each field has among them.
    """
    parsed = LiteLLMInfo()
    for entry in _data_list(payload):
        if not isinstance(entry, dict):
            parsed.rejected.append("entry is not an object")
            continue
        info = _dict(entry.get("model_info"))
        for group in _strings(info.get("access_groups")):
            if invalid_model_id_reason(group) is None:
                parsed.access_groups.add(group)
        name = entry.get("model_name")
        if (reason := _id_problem(name)) is not None:
            parsed.rejected.append(f"model_name {reason.removeprefix('id ')}")
            continue
        try:
            details = _litellm_details(info)
        except ValidationError:
            parsed.rejected.append("model_info has values a catalog record cannot hold")
            continue
        known = parsed.models.get(name)
        parsed.models[name] = details if known is None else known.filled_from(details)
    return parsed


def enrich_with_litellm_info(parsed: ParsedList, info: LiteLLMInfo) -> ParsedList:
    """The list with what `/model/info` adds: metadata the list lacks (the list's own values win),
    non-chat models and access-group names taken out."""
    enriched = ParsedList(
        models=[],
        skipped_non_chat=list(parsed.skipped_non_chat),
        rejected=list(parsed.rejected),
        reserved=list(parsed.reserved),
        listed=parsed.listed,
    )
    for model in parsed.models:
        details = info.models.get(model.id)
        if details is None:
            if model.id in info.access_groups:
                enriched.rejected.append("id names an access group, not a model")
            else:
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
            name: value
            for name, value in known.items()
            if value is not None and (name == "display_name" or getattr(model, name) is None)
        }
        enriched.models.append(model.model_copy(update=gaps))
    return enriched


# --- Which format a GET <base>/models answer is in ---------------------------------------------

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
