"""Each runtime's native model list, read into the Anthropic Models API shape.

The parsers are pure functions of a decoded JSON payload. A runtime's listing is a generator
that yields the HTTP requests it needs and receives their responses (errors are thrown into
it as typed errors), so the same listing runs under the sync and the async client, and the
tests can drive it without a network.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from sidecar.catalog import Catalog, ModelInfo, ModelList, invalid_model_id_reason
from sidecar.lists import anthropic
from sidecar.lists.entries import MAX_LIST_BYTES, MalformedModelList
from sidecar.lists.formats import parse_model_list
from sidecar.sdk.config import Options
from sidecar.sdk.errors import AuthenticationError, MalformedResponseError, NotFoundError

log = structlog.get_logger("sidecar.sdk")

RUNTIMES: tuple[str, ...] = ("anthropic", "cursor", "opencode", "opencode-anthropic")
# opencode behind the sidecar answers in the Anthropic shape already; the alias says so.
ALIASES = {"opencode-anthropic": "opencode"}


# The listing protocol: yields requests, is sent responses, returns the list.
Listing = Generator[httpx.Request, httpx.Response, ModelList]

# --- Pure parsers -----------------------------------------------------------------------------


@dataclass
class Page:
    """One page of an Anthropic-shaped list."""

    models: list[ModelInfo]
    has_more: bool
    last_id: str | None
    rejected: list[str] = field(default_factory=list)  # reasons, never the raw entries


def parse_anthropic_page(payload: Any) -> Page:
    """`{"data": [...], "has_more", "first_id", "last_id"}`, from Anthropic or from the sidecar.

    The gateway side's parser, with readable names for models that have none and the
    sidecar's own `registered` mark, which no gateway sends.
    """
    parsed, has_more, last_id = anthropic.parse_anthropic_page(payload, fallback_name=readable_name)
    registered = {
        entry["id"] for entry in payload["data"]
        if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry.get("registered") is True
    }
    models = [model.model_copy(update={"registered": True}) if model.id in registered else model
              for model in parsed.models]
    return Page(models=models, has_more=has_more, last_id=last_id, rejected=parsed.rejected)


def parse_cursor_models(payload: Any) -> tuple[list[ModelInfo], list[str]]:
    """Cursor's v0 answer `{"models": ["id", ...]}` or its v1 answer `{"items": [{"id", "displayName"}]}`.

    Cursor gives no dates or limits: dates are the epoch ("unknown"), limits null.
    """
    if isinstance(payload, dict) and isinstance(payload.get("items"), list):
        entries = payload["items"]
    elif isinstance(payload, dict) and isinstance(payload.get("models"), list):
        entries = payload["models"]
    else:
        raise MalformedModelList("expected a JSON object with an 'items' list (v1) or a 'models' list (v0)")
    models: list[ModelInfo] = []
    rejected: list[str] = []
    for entry in entries:
        model_id, display_name = (entry, None) if isinstance(entry, str) else _cursor_item(entry)
        if (reason := invalid_model_id_reason(model_id)) is not None:
            rejected.append(f"id {reason}")
            continue
        if not isinstance(display_name, str) or not display_name.strip():
            display_name = readable_name(model_id)
        models.append(ModelInfo(id=model_id, display_name=display_name))
    return models, rejected


def _cursor_item(entry: Any) -> tuple[Any, Any]:
    if not isinstance(entry, dict):
        return None, None
    return entry.get("id"), entry.get("displayName")


# Words people write in capitals, and words that stay as they are.
_CAPITALS = {"gpt": "GPT", "ai": "AI", "api": "API", "llm": "LLM", "xl": "XL"}


def readable_name(model_id: str) -> str:
    """A display name for a bare id: `claude-4-sonnet-thinking` -> `Claude 4 Sonnet Thinking`.

    Only words of letters are touched, so `o3`, `4.5` and `qwen2.5:7b` stay as written.
    """
    words = [word for word in re.split(r"[-_\s]+", model_id) if word]
    shown = [
        _CAPITALS.get(word.lower(), word.capitalize() if word.isalpha() and word.islower() else word)
        for word in words
    ]
    return " ".join(shown) or model_id


def first(models: Sequence[ModelInfo], limit: int | None, *, more: bool = False) -> ModelList:
    """At most `limit` models as one list; `has_more` when some were left out or the source had more."""
    chosen = list(models if limit is None else models[:limit])
    return ModelList(
        data=chosen,
        has_more=more or len(chosen) < len(models),
        first_id=chosen[0].id if chosen else None,
        last_id=chosen[-1].id if chosen else None,
    )


# --- Listings: the requests each runtime needs -----------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One runtime's base URL and credentials; the headers hold the key and stay out of the repr."""

    runtime: str
    base_url: str
    headers: dict[str, str] = field(repr=False)
    # Where the key would have come from, for the hint when none was sent.
    key_variable: str | None = None

    def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Request:
        headers = {"accept": "application/json", **self.headers}
        return httpx.Request("GET", self.base_url + path, params=params, headers=headers)


def canonical_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(RUNTIMES)}")
    return ALIASES.get(runtime, runtime)


def listing_for(runtime: str, options: Options, limit: int | None) -> Listing:
    """The listing of one runtime (a name from RUNTIMES), as `options` describe where it is."""
    name = canonical_runtime(runtime)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number from 1, or None for every model, not {limit!r}")
    if name == "anthropic":
        headers = {"anthropic-version": options.anthropic_version}
        if options.anthropic_api_key:
            headers["x-api-key"] = options.anthropic_api_key
        key_variable = _unless(options.anthropic_api_key, "ANTHROPIC_API_KEY")
        endpoint = Endpoint(runtime, options.anthropic_base_url, headers, key_variable)
        return list_anthropic_shape(endpoint, limit)
    if name == "cursor":
        return list_cursor(runtime, options, limit)
    if options.gateway_url is not None:
        headers = {"authorization": f"Bearer {options.gateway_api_key}"} if options.gateway_api_key else {}
        key_variable = _unless(options.gateway_api_key, "SIDECAR_GATEWAY_API_KEY")
        return list_gateway(Endpoint(runtime, options.gateway_url, headers, key_variable), limit)
    headers = {"x-api-key": options.sidecar_api_key} if options.sidecar_api_key else {}
    endpoint = Endpoint(runtime, options.sidecar_url, headers, _unless(options.sidecar_api_key, "SIDECAR_API_KEY"))
    return list_anthropic_shape(endpoint, limit)


def _unless(key: str | None, variable: str) -> str | None:
    return None if key else variable


def list_anthropic_shape(endpoint: Endpoint, limit: int | None) -> Listing:
    """`GET /v1/models`, following `after_id` while `has_more` and fewer than `limit` are in."""
    collected: list[ModelInfo] = []
    after_id: str | None = None
    asked_after: set[str] = set()
    while True:
        wanted = anthropic.MAX_PAGE if limit is None else min(anthropic.MAX_PAGE, limit - len(collected))
        params: dict[str, Any] = {"limit": wanted} | ({"after_id": after_id} if after_id else {})
        response = yield from _ask(endpoint, endpoint.get("/v1/models", params))
        page = _parsed(endpoint.runtime, response, parse_anthropic_page)
        _log_rejected(endpoint.runtime, page.rejected)
        collected += page.models
        enough = limit is not None and len(collected) >= limit
        if not page.has_more or enough:
            return first(collected, limit, more=page.has_more)
        if page.last_id is None or page.last_id in asked_after:
            raise MalformedResponseError(
                endpoint.runtime, "has_more is true but the list does not move on past last_id"
            )
        asked_after.add(page.last_id)
        after_id = page.last_id


def list_cursor(runtime: str, options: Options, limit: int | None) -> Listing:
    """v1 (HTTP Basic, the key as user name) and/or v0 (Bearer), as `cursor_api_version` says.

    `auto` asks v1, Cursor's current API, and falls back to v0 only when v1 is not there (404).
    """
    if options.cursor_api_version != "auto":
        return (yield from _list_cursor_version(runtime, options, options.cursor_api_version, limit))
    try:
        return (yield from _list_cursor_version(runtime, options, "v1", limit))
    except NotFoundError:
        log.info("sdk.cursor_fallback", tried="v1")
    return (yield from _list_cursor_version(runtime, options, "v0", limit))


def _list_cursor_version(runtime: str, options: Options, version: str, limit: int | None) -> Listing:
    key = options.cursor_api_key
    headers: dict[str, str] = {}
    if key and version == "v1":
        headers["authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    elif key:
        headers["authorization"] = f"Bearer {key}"
    endpoint = Endpoint(runtime, options.cursor_base_url, headers, _unless(key, "CURSOR_API_KEY"))
    response = yield from _ask(endpoint, endpoint.get(f"/{version}/models"))
    models, rejected = _parsed(runtime, response, parse_cursor_models)
    _log_rejected(runtime, rejected)
    return first(models, limit)


def list_gateway(endpoint: Endpoint, limit: int | None) -> Listing:
    """An OpenAI-compatible gateway's list, converted as the sidecar converts it for opencode."""
    response = yield from _ask(endpoint, endpoint.get("/v1/models"))
    parsed = _parsed(endpoint.runtime, response, parse_model_list)
    _log_rejected(endpoint.runtime, parsed.rejected)
    # The sidecar's order: newest first, then by id.
    return first(list(Catalog(parsed.models)), limit)


def _ask(endpoint: Endpoint, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
    try:
        return (yield request)
    except AuthenticationError as exc:
        if endpoint.key_variable is None:
            raise
        hint = f"{exc.message}; no key was sent: set {endpoint.key_variable} or pass it as an argument"
        raise AuthenticationError(exc.runtime, hint, status=exc.status) from None


def _parsed(runtime: str, response: httpx.Response, parse: Any) -> Any:
    if len(response.content) > MAX_LIST_BYTES:
        raise MalformedResponseError(runtime, f"model list larger than {MAX_LIST_BYTES} bytes")
    try:
        payload = json.loads(response.content)
    except (ValueError, RecursionError):
        raise MalformedResponseError(runtime, "the answer is not JSON") from None
    try:
        return parse(payload)
    except MalformedModelList as exc:
        raise MalformedResponseError(runtime, f"not a model list: {exc}") from None


def _log_rejected(runtime: str, rejected: list[str]) -> None:
    if rejected:
        log.debug("sdk.entries_rejected", runtime=runtime, count=len(rejected), reasons=rejected[:10])
