"""Polls one gateway's model list over HTTP, in its own format, with timeouts and retries."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import httpx
import orjson
import structlog

from sidecar.catalog import Catalog, NewestModels, cap
from sidecar.gateway.config import Gateway
from sidecar.lists.anthropic import ANTHROPIC_VERSION, MAX_PAGE, parse_anthropic_page
from sidecar.lists.detect import detect_format
from sidecar.lists.entries import MAX_LIST_BYTES, KnownEntries, MalformedModelList, ParsedList
from sidecar.lists.formats import parse_lmstudio_models, parse_models, parse_ollama_tags
from sidecar.lists.litellm import (
    WILDCARD_ROUTES_PARAM,
    enrich_with_litellm_info,
    parse_litellm_model_info,
    wildcard_routes,
    without_sentinels,
)
from sidecar.reasons import server_reason
from sidecar.retry import RetryPolicy, Transient, retrying

log = structlog.get_logger("sidecar.gateway")

# The list is decoded whole before SIDECAR_MAX_MODELS cuts it, and each decoded object costs far
# more than its bytes: 800,000 entries like {"id":"m0000001"} (15.3 MiB, under MAX_LIST_BYTES) took
# the sidecar to 324 MiB, over the 256 Mi of deploy/kubernetes/base; 100,001 entries with long
# ids, 160 MiB (measured). Counting `{` bounds the objects before any is built (braces inside
# strings only make it stricter); LiteLLM's /model/info has a few objects per model, so this is
# tens of thousands of models, several times the default cap.
MAX_LIST_OBJECTS = 250_000
# A probe's answer matters only for its error message, which is short.
MAX_PROBE_BYTES = 64 * 1024
# A redirect is never followed, so the key never leaves for another address; where it pointed is
# the gateway's word and is not repeated.
_NOT_FOLLOWED = "redirected to another address (HTTP {status}); not followed"
# A bound on how many pages of an Anthropic-shaped list one poll follows.
MAX_PAGES = 100


class GatewayError(Exception):
    """The gateway could not give a model list; the message is safe to log."""


class _Retryable(GatewayError, Transient):
    pass


class _NotFound(GatewayError):
    pass


class ModelRejected(GatewayError):
    """The gateway refused a probe request for a model; the message carries its reason, and
    `status` and `reason` the gateway's own (sidecar/failing.py tells a refusal from a rate limit)."""

    def __init__(self, message: str, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason or message


# A GET as a poll asks it: the URL and its query parameters.
_Request = tuple[str, tuple[tuple[str, Any], ...]]


def _request(url: str, params: dict[str, Any] | None) -> _Request:
    return url, tuple(sorted((params or {}).items()))


def _outcome(got: bytearray | GatewayError) -> str:
    """What a GET gave, small enough to keep: its body's digest, or the error it ended in."""
    if isinstance(got, GatewayError):
        return f"{type(got).__name__}: {got}"
    return hashlib.sha256(got).hexdigest()


@dataclass(frozen=True)
class _LastPoll:
    """The requests of the last poll that gave a catalog, what each gave, and that catalog; with
    the ETag and Last-Modified of the answers that had them, to ask the next time whether they changed."""

    reads: tuple[tuple[_Request, str], ...]
    catalog: Catalog
    validators: dict[_Request, dict[str, str]] = field(default_factory=dict)


class _NotModified:
    """A 304 to a conditional request: the answer is the one the validators came with."""


NOT_MODIFIED = _NotModified()


def auth_headers(gateway: Gateway) -> dict[str, str]:
    """How each kind of gateway wants its key; the operator's own headers come on top."""
    headers = {"accept": "application/json"}
    key = gateway.api_key.get_secret_value() if gateway.api_key is not None else None
    if gateway.format == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
        if gateway.format == "portkey":
            headers["x-portkey-api-key"] = key
    return {**headers, **{name.lower(): value for name, value in gateway.request_headers.items()}}


class GatewayClient:
    """One gateway's list and probes. `timeout` bounds each request, `retries` is how often a poll
    retries a transient failure, `max_models` the models kept (SIDECAR_MAX_MODELS), and `secrets`
    are blanked out of any reason the gateway gives."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        timeout: float,
        retries: int,
        max_models: int,
        secrets: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.gateway = gateway
        self._timeout = timeout
        self._max_models = max_models
        self._secrets = tuple(secrets)
        self._sleep = sleep
        self._retries = RetryPolicy(max_retries=retries, rng=rng, scheduled=self._retry_scheduled)
        # What `auto` turned out to be, once a list has been read.
        self._format: str | None = None if gateway.format == "auto" else gateway.format
        # The reserved ids last reported as dropped: said again only when they change, not every poll.
        self._dropped_reserved: list[str] = []
        # The wildcard routes (LiteLLM's `openai/*`) of the last list read: models served unlisted.
        self.routes: tuple[str, ...] = ()
        # The ids of the last list read that SIDECAR_MAX_MODELS left out of the catalog.
        self.unkept: frozenset[str] = frozenset()
        # A poll whose requests all answer as the last good one's did gives that poll's catalog: no
        # model is decoded or built again (10,000 models: 1.3 ms of sha256 against ~150 ms).
        self._last: _LastPoll | None = None
        # This poll's: answers read while comparing with the last, and what each request gave.
        self._prefetched: dict[_Request, bytearray | GatewayError] = {}
        self._reads: list[tuple[_Request, str]] = []
        self._validators: dict[_Request, dict[str, str]] = {}
        # The last read's verdict on each entry of the list: a changed list reads only what changed.
        self._known = KnownEntries()
        self._json_fallback = False  # this poll's list decoded by json, where `known` is not exact
        self._http = httpx.AsyncClient(
            headers=auth_headers(gateway),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            # A redirect must never carry the key to another address.
            follow_redirects=False,
        )

    @property
    def detected_format(self) -> str | None:
        return self._format

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch_catalog(self) -> Catalog:
        """The gateway's chat models; retries transient failures, then raises GatewayError."""
        try:
            return await retrying(self._fetch_once, self._retries, self._sleep)
        except _Retryable as exc:
            raise GatewayError(str(exc)) from None

    def _retry_scheduled(self, error: Transient, attempt: int, delay: float) -> None:
        log.warning(
            "gateway.retry_scheduled", gateway=self.gateway.id, attempt=attempt, delay=round(delay, 3), error=str(error)
        )

    def _keep(self) -> NewestModels:
        """Where a list's models go as they are read: at most the newest SIDECAR_MAX_MODELS (times
        two while reading) of those the include/exclude globs want."""
        return NewestModels(self._max_models, self.gateway.wants)

    async def _fetch_once(self) -> Catalog:
        self._prefetched, self._reads, self._validators = {}, [], {}
        try:
            if self._last is not None and await self._answers_as_before(self._last):
                log.debug("gateway.answer_unchanged", gateway=self.gateway.id, models=len(self._last.catalog))
                self._last = replace(self._last, validators=self._validators)
                return self._last.catalog
            detecting = self._format is None
            catalog = await self._read_catalog()
            # A poll that detected the format asked as `auto` does; the next asks as that format.
            self._last = None if detecting else _LastPoll(tuple(self._reads), catalog, self._validators)
            return catalog
        finally:
            self._prefetched = {}  # no answer held between polls

    async def _answers_as_before(self, last: _LastPoll) -> bool:
        """Ask what the last good poll asked, in its order, while every answer is the same as then.
        What was read is kept for the full read that follows a difference, so nothing is asked twice."""
        for request, outcome in last.reads:
            url, params = request
            conditional = last.validators.get(request)
            try:
                got: bytearray | GatewayError | _NotModified = await self._ask(url, dict(params) or None, conditional)
            except GatewayError as exc:
                got = exc
            if got is NOT_MODIFIED and conditional is not None:
                # The gateway says it is the same answer (a 304 sends no body, so a full read that
                # follows another request's difference asks this one again, plainly).
                self._validators[request] = conditional
                continue
            assert not isinstance(got, _NotModified)
            self._prefetched[request] = got
            if _outcome(got) != outcome:
                return False
        return True

    async def _read_catalog(self) -> Catalog:
        self._json_fallback = False
        try:
            parsed = await self._read_list()
        except MalformedModelList as exc:
            raise GatewayError(f"malformed model list: {exc}") from None
        if parsed.rejected:
            log.debug(
                "gateway.entries_rejected", gateway=self.gateway.id, count=len(parsed.rejected), reasons=parsed.rejected[:10]
            )
        reserved = sorted(set(parsed.reserved))  # at most a dozen, however often listed
        if reserved and reserved != self._dropped_reserved:
            # Not a debug line: the operator's gateway lists a model that opencode cannot be given.
            log.warning(
                "gateway.models_dropped",
                gateway=self.gateway.id,
                models=reserved,
                reason="a JavaScript Object.prototype name that opencode's config cannot hold as a model id",
            )
        self._dropped_reserved = reserved
        if parsed.skipped_non_chat:
            log.debug(
                "gateway.non_chat_skipped",
                gateway=self.gateway.id,
                count=len(parsed.skipped_non_chat),
                first=parsed.skipped_non_chat[:10],
            )
        models = self.gateway.select(parsed.models)
        catalog = cap(models, self._max_models, listed=parsed.listed)
        # Listed by the gateway, left out by SIDECAR_MAX_MODELS: still accepted by name, as listed.
        self.unkept = frozenset(parsed.trimmed | {model.id for model in models[len(catalog) :]})
        return catalog

    async def _read_list(self) -> ParsedList:
        base, root = self.gateway.api_base, self.gateway.root
        fmt = self._format
        if fmt == "anthropic":
            return await self._anthropic_list()
        if fmt == "ollama":
            return parse_ollama_tags(await self._get_json(f"{root}/api/tags"), self._keep())
        if fmt == "lmstudio":
            try:
                return parse_lmstudio_models(await self._get_json(f"{root}/api/v0/models"), self._keep())
            except _NotFound:
                return parse_models("lmstudio", await self._get_json(f"{base}/models"), self._keep())
        payload = await self._get_json(f"{base}/models", WILDCARD_ROUTES_PARAM if fmt == "litellm" else None)
        detecting = fmt is None
        fmt = fmt or detect_format(payload)
        if fmt == "anthropic":
            parsed = await self._anthropic_list(payload)
        else:
            parsed = self._parse_models(fmt, payload)
        # LiteLLM's list says little; its /model/info says the rest, and tells LiteLLM apart.
        if fmt == "litellm" or (detecting and fmt == "openai"):
            info = await self._litellm_info()
            if info is not None:
                if detecting:
                    # Once, when `auto` finds LiteLLM: its wildcard routes come only when asked for.
                    payload = await self._get_json(f"{base}/models", WILDCARD_ROUTES_PARAM)
                    fmt, parsed = "litellm", self._parse_models("litellm", payload)
                parsed = enrich_with_litellm_info(parsed, info)
            elif fmt == "litellm":
                parsed = without_sentinels(parsed)
            if fmt == "litellm":
                self.routes = wildcard_routes(payload)
        if detecting:
            self._format = fmt
            log.info("gateway.format_detected", gateway=self.gateway.id, format=fmt)
        return parsed

    def _parse_models(self, fmt: str, payload: Any) -> ParsedList:
        if self._json_fallback:
            return parse_models(fmt, payload, self._keep())
        parsed = parse_models(fmt, payload, self._keep(), known=self._known)
        self._known = parsed.known or KnownEntries()  # none: a list too long to remember
        return parsed

    async def _litellm_info(self) -> Any:
        """LiteLLM's `/model/info`, or None where the gateway has no such route or answers oddly."""
        try:
            return parse_litellm_model_info(await self._get_json(f"{self.gateway.root}/model/info"))
        except (GatewayError, MalformedModelList) as exc:
            log.debug("gateway.model_info_unavailable", gateway=self.gateway.id, error=str(exc))
            return None

    async def _anthropic_list(self, first: Any = None) -> ParsedList:
        """Every page of an Anthropic-shaped list, following `after_id` while `has_more`."""
        url = f"{self.gateway.api_base}/models"
        payload = first if first is not None else await self._get_json(url, {"limit": MAX_PAGE})
        collected, keep = ParsedList(models=[]), self._keep()
        for _ in range(MAX_PAGES):
            page, has_more, last_id = parse_anthropic_page(payload)
            keep.extend(page.models)
            collected.skipped_non_chat.extend(page.skipped_non_chat)
            collected.rejected.extend(page.rejected)
            collected.reserved.extend(page.reserved)
            if not has_more or not last_id:
                collected.models, collected.listed, collected.trimmed = keep.candidates(), keep.listed, keep.trimmed
                return collected
            payload = await self._get_json(url, {"limit": MAX_PAGE, "after_id": last_id})
        raise GatewayError(f"model list has more than {MAX_PAGES} pages")

    async def _get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        body = await self._get(url, params)
        objects = body.count(b"{")
        if objects > MAX_LIST_OBJECTS:
            raise GatewayError(
                f"{httpx.URL(url).path}: model list of {objects} JSON objects, more than the {MAX_LIST_OBJECTS} "
                "the sidecar decodes (each costs memory before SIDECAR_MAX_MODELS applies); list fewer models "
                "at the gateway for this key"
            )
        try:
            # orjson: 10,000 models (0.9 MB) in 3-5 ms, json 10-12 (measured, issue 19).
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            self._json_fallback = True
        try:
            # What orjson refuses and json takes (NaN, a lone surrogate) reads as it always did.
            return json.loads(body)
        except (ValueError, RecursionError):
            raise GatewayError("malformed model list: body is not JSON") from None

    async def _get(self, url: str, params: dict[str, Any] | None) -> bytearray:
        """The body of a GET, read no further than MAX_LIST_BYTES, headers and body within gateway_timeout;
        an answer this poll has already read is not asked again. Each outcome is noted for the next poll."""
        request = _request(url, params)
        got = self._prefetched.pop(request, None)
        if got is None:
            try:
                got = await self._ask(url, params)
            except GatewayError as exc:
                got = exc
        assert not isinstance(got, _NotModified)  # asked without validators
        self._reads.append((request, _outcome(got)))
        if isinstance(got, GatewayError):
            raise got
        return got

    async def _ask(
        self, url: str, params: dict[str, Any] | None, conditional: dict[str, str] | None = None
    ) -> bytearray | _NotModified:
        """One GET; with `conditional` (the last answer's validators), NOT_MODIFIED for a 304."""
        path = httpx.URL(url).path
        timeout = self._timeout
        try:
            # httpx's timeout bounds each read, so a gateway dripping a byte at a time would never
            # trip it: the whole request has a deadline of its own.
            with anyio.fail_after(timeout):
                return await self._read_body(url, params, path, conditional)
        except (TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"{path} timed out after {timeout}s") from None
        except httpx.HTTPError as exc:
            raise _Retryable(f"{path}: request failed: {type(exc).__name__}") from None

    async def _read_body(
        self, url: str, params: dict[str, Any] | None, path: str, conditional: dict[str, str] | None
    ) -> bytearray | _NotModified:
        headers = None
        if conditional:
            headers = {
                name: conditional[key]
                for name, key in (("if-none-match", "etag"), ("if-modified-since", "last-modified"))
                if key in conditional
            }
        async with self._http.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code == 304 and headers:
                return NOT_MODIFIED
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"{path} answered HTTP {response.status_code}")
            if response.status_code == 404:
                raise _NotFound(f"{path} answered HTTP 404")
            if response.has_redirect_location:
                raise GatewayError(f"{path} {_NOT_FOLLOWED.format(status=response.status_code)}")
            if response.status_code != 200:
                raise GatewayError(f"{path} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_LIST_BYTES:
                raise GatewayError(f"{path}: model list larger than {MAX_LIST_BYTES} bytes")
            validators = {key: response.headers[key] for key in ("etag", "last-modified") if key in response.headers}
            if validators:
                self._validators[_request(url, params)] = validators
            # One buffer, not chunks then their join: a 16 MiB list held once, not twice.
            body = bytearray()
            async for chunk in response.aiter_bytes():
                if len(body) + len(chunk) > MAX_LIST_BYTES:
                    raise GatewayError(f"{path}: model list larger than {MAX_LIST_BYTES} bytes")
                body += chunk
            return body

    async def probe(self, model_id: str) -> None:
        """Ask the gateway to accept `model_id` with the smallest chat request there is.

        Raises ModelRejected when it refuses the model, GatewayError when it can't be asked.
        """
        messages = [{"role": "user", "content": "ping"}]
        body = {"model": model_id, "messages": messages, "max_tokens": 1}
        path, headers = "/chat/completions", {}
        if self.gateway.speaks_anthropic:
            path, headers = "/messages", {"anthropic-version": ANTHROPIC_VERSION}
            if self.gateway.api_key is not None:
                headers["x-api-key"] = self.gateway.api_key.get_secret_value()
        timeout = self._timeout
        try:
            with anyio.fail_after(timeout):
                await self._ask_probe(f"{self.gateway.api_base}{path}", body, headers, model_id)
        except (TimeoutError, httpx.TimeoutException):
            raise GatewayError(f"the gateway could not be asked: timed out after {timeout}s") from None
        except httpx.HTTPError as exc:
            raise GatewayError(f"the gateway could not be asked: {type(exc).__name__}") from None

    async def _ask_probe(self, url: str, body: dict[str, Any], headers: dict[str, str], model_id: str) -> None:
        async with self._http.stream("POST", url, json=body, headers=headers) as response:
            if response.is_success:
                return
            if response.has_redirect_location:
                raise GatewayError(f"the gateway {_NOT_FOLLOWED.format(status=response.status_code)}")
            if 400 <= response.status_code < 500:
                content = await _read_at_most(response, MAX_PROBE_BYTES)
                answer = httpx.Response(response.status_code, content=content)
                reason = server_reason(answer, self._secrets) or f"HTTP {response.status_code}"
                raise ModelRejected(f"the gateway rejected model {model_id!r}: {reason}", response.status_code, reason)
            raise GatewayError(f"the gateway answered HTTP {response.status_code} to a probe of {model_id!r}")


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of a streamed body; the rest is never read."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: limit - size])
        size += len(chunks[-1])
        if size >= limit:
            break
    return b"".join(chunks)
