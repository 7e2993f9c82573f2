"""`GET <base>/models` read per gateway format, and the local runners' own list routes."""

from __future__ import annotations

from typing import Any, Literal, get_args

from sidecar.catalog import ModelInfo, NewestModels, invalid_model_id_reason
from sidecar.lists.entries import KnownEntries, MalformedModelList, ParsedList, Reader, data_list, read_entries
from sidecar.lists.values import (
    as_dict,
    chat_mode,
    cost,
    dated,
    modalities,
    name,
    number,
    per_million,
    positive_int,
    strings,
    unix_time,
)

# "auto" detects the format from the first answer (detect.py); "anthropic" is read by anthropic.py.
Format = Literal["auto", "openai", "litellm", "openrouter", "portkey", "together", "vllm", "ollama", "lmstudio", "anthropic"]
FORMATS: tuple[str, ...] = get_args(Format)

TOGETHER_CHAT_TYPES = frozenset({"chat", "language", "code"})
LMSTUDIO_CHAT_TYPES = frozenset({"llm", "vlm"})


def _openai_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    """The OpenAI shape, with LiteLLM's extras where present.

    `created` is ignored on purpose: LiteLLM answers a fixed placeholder, vLLM the time of the
    request and Ollama the file's time, so it is no creation date; the catalog says "unknown".
    """
    if not chat_mode(entry.get("mode")):
        return None
    return ModelInfo(
        id=model_id,
        display_name=model_id,
        max_input_tokens=positive_int(entry.get("max_input_tokens")),
        max_tokens=positive_int(entry.get("max_output_tokens")),
    )


def _vllm_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    model = _openai_model(entry, model_id)
    context = positive_int(entry.get("max_model_len"))
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
    architecture = as_dict(entry.get("architecture"))
    inputs, outputs = architecture.get("input_modalities"), architecture.get("output_modalities")
    legacy = architecture.get("modality")
    if not isinstance(outputs, list) and isinstance(legacy, str) and "->" in legacy:
        # Older answers say "text+image->text" instead of the two lists.
        before, _, after = legacy.partition("->")
        inputs, outputs = before.split("+"), after.split("+")
    output_modalities = modalities(outputs)
    said_outputs = strings(outputs)
    if said_outputs and "text" not in said_outputs:
        return None  # image generators, embedders: nothing to chat with
    top = as_dict(entry.get("top_provider"))
    pricing = as_dict(entry.get("pricing"))
    parameters = entry.get("supported_parameters")
    said = isinstance(parameters, list)
    named = strings(parameters)
    return ModelInfo(
        id=model_id,
        display_name=name(entry.get("name"), model_id),
        max_input_tokens=positive_int(entry.get("context_length")) or positive_int(top.get("context_length")),
        max_tokens=positive_int(top.get("max_completion_tokens")),
        cost=cost(
            per_million(pricing.get("prompt")),
            per_million(pricing.get("completion")),
            per_million(pricing.get("input_cache_read")),
            per_million(pricing.get("input_cache_write")),
        ),
        input_modalities=modalities(inputs),
        output_modalities=output_modalities,
        tool_call=("tools" in named) if said else None,
        reasoning=bool(named & {"reasoning", "include_reasoning"}) if said else None,
        canonical_slug=_slug(entry.get("canonical_slug"), model_id),
        **dated(unix_time(entry.get("created"))),
    )


def _slug(value: Any, model_id: str) -> str | None:
    slug = name(value, model_id)
    return None if slug == model_id or invalid_model_id_reason(slug) is not None else slug


def _together_model(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    kind = entry.get("type")
    if isinstance(kind, str) and kind not in TOGETHER_CHAT_TYPES:
        return None
    pricing = as_dict(entry.get("pricing"))
    return ModelInfo(
        id=model_id,
        display_name=name(entry.get("display_name"), model_id),
        max_input_tokens=positive_int(entry.get("context_length")),
        # Together's prices are per million tokens already.
        cost=cost(number(pricing.get("input")), number(pricing.get("output"))),
        **dated(unix_time(entry.get("created"))),
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
        max_input_tokens=positive_int(entry.get("max_context_length")),
        input_modalities=("text", "image") if kind == "vlm" else ("text",),
        # LM Studio marks the models trained for tools; the others may still follow a prompt.
        tool_call=True if "tool_use" in strings(capabilities) else None,
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


def parse_models(
    fmt: str, payload: Any, keep: NewestModels | None = None, known: KnownEntries | None = None
) -> ParsedList:
    """The answer of `GET <base>/models` in format `fmt` (a FORMATS name but "auto" and "anthropic");
    `known` as read_entries takes it."""
    read = _LIST_READERS.get(fmt)
    if read is None:
        # Our own configuration, not the gateway's answer: a programming error.
        raise ValueError(f"no list parser for format {fmt!r}; known: {', '.join(_LIST_READERS)}")
    if fmt == "together":
        if isinstance(payload, list):
            return read_entries(payload, read, keep=keep, known=known)
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise MalformedModelList("expected a JSON array of models, or an object with a 'data' list")
    return read_entries(data_list(payload), read, keep=keep, known=known)


def parse_model_list(payload: Any) -> ParsedList:
    """The OpenAI shape `{"object": "list", "data": [...]}`: `parse_models("openai", ...)`."""
    return parse_models("openai", payload)


# --- The local runners' own routes ----------------------------------------------------------


def _ollama_tag(entry: dict[str, Any], model_id: str) -> ModelInfo | None:
    details = as_dict(entry.get("details"))
    families = strings(details.get("families")) | strings([details.get("family")])
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
    return read_entries(entries, _ollama_tag, id_key="name", keep=keep)


def parse_lmstudio_models(payload: Any, keep: NewestModels | None = None) -> ParsedList:
    """LM Studio's `GET /api/v0/models`: `type` llm or vlm chats, embeddings doesn't."""
    return read_entries(data_list(payload), _lmstudio_model, keep=keep)
