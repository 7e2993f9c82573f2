"""Forward everything that is not the sidecar's own API to opencode.

The caller never needs opencode's password: the sidecar adds it. Because of that, what only the
password protected must not leak through: opencode shows the gateway key in `/config`,
`/config/providers` and `/provider`, so every secret the sidecar holds for others (gateway keys,
opencode's password) is redacted from answers. The caller's own API key is not: they know it.
Requests that carry a model have it normalised and resolved first.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import httpx
import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.naming import ModelRef

log = structlog.get_logger("sidecar.passthrough")

REDACTED = b"[redacted]"

# Per connection, or the sidecar's own business: never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "accept-encoding",
        "authorization",
        "x-api-key",
    }
)

# Where opencode's requests carry a model, and in which form it expects it.
MODEL_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/session/[^/]+/(message|prompt_async|shell)$"), "pair"),
    (re.compile(r"^/session/[^/]+/command$"), "string"),
    (re.compile(r"^/session/[^/]+/(init|summarize)$"), "fields"),
    (re.compile(r"^/(api/)?session$"), "id"),
    (re.compile(r"^/api/session/[^/]+/model$"), "id"),
]

Resolve = Callable[[Any, str | None], Awaitable[ModelRef]]


def model_form(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    for pattern, form in MODEL_ROUTES:
        if pattern.match(path):
            return form
    return None


def requested_model(body: dict[str, Any], form: str) -> Any:
    """The model in a request body, as the caller wrote it, or None when it names none."""
    if form == "fields":
        if body.get("modelID") is None:
            return None
        return {"providerID": body.get("providerID"), "modelID": body["modelID"]}
    return body.get("model")


def with_model(body: dict[str, Any], form: str, ref: ModelRef) -> dict[str, Any]:
    """The body with the resolved model, in the form opencode wants at that route."""
    body = dict(body)
    if form == "pair":
        body["model"] = ref.as_pair()
    elif form == "string":
        body["model"] = str(ref)
    elif form == "fields":
        body["providerID"], body["modelID"] = ref.provider_id, ref.model_id
    else:
        original = body.get("model")
        model = {"id": ref.model_id, "providerID": ref.provider_id}
        if isinstance(original, dict) and isinstance(original.get("variant"), str):
            model["variant"] = original["variant"]
        body["model"] = model
    return body


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self.longest = len(self._secrets[0]) if self._secrets else 0

    def __call__(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        return data


class Passthrough:
    def __init__(
        self,
        opencode_url: str,
        password: str | None,
        resolve: Resolve,
        secrets: Iterable[str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        seen_directory: Callable[[str], None] | None = None,
    ) -> None:
        self._resolve = resolve
        # Told of each directory a request goes to, so that one loaded without any event is kept current.
        self._seen_directory = seen_directory
        self._redact = Redactor(secrets)
        self._http = httpx.AsyncClient(
            base_url=opencode_url,
            auth=httpx.BasicAuth("opencode", password) if password is not None else None,
            timeout=httpx.Timeout(30.0, read=None),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def forward(self, request: Request) -> Response:
        path = request.url.path
        query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "auth_token"]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("accept-encoding", "identity"))  # redaction needs the plain text
        content: bytes | AsyncIterator[bytes] | None = None
        directory = _directory(request, query)
        if directory is not None:
            # opencode reads the query before the header: one checked value, where it looks first,
            # so that the directory it works in is the one tracked here.
            query = [(k, v) for k, v in query if k != "directory"] + [("directory", directory)]
            headers = [(k, v) for k, v in headers if k.lower() != "x-opencode-directory"]
            if self._seen_directory is not None:
                self._seen_directory(directory)
        form = model_form(request.method, path)
        if form is not None:
            body = await request.body()
            content = await self._rewrite_model(body, form, directory) if body else None
        elif "content-length" in request.headers or "transfer-encoding" in request.headers:
            content = request.stream()
            # A chunked body's length is known only at its end: a Content-Length beside it (refused
            # before here as a smuggling attempt) would tell opencode to cut the stream elsewhere.
            if "transfer-encoding" not in request.headers:
                headers.append(("content-length", request.headers["content-length"]))
        raw_path = request.scope.get("raw_path") or path.encode()
        target = raw_path.decode("latin-1") + (f"?{urlencode(query)}" if query else "")
        upstream = self._http.build_request(request.method, target, headers=headers, content=content)
        try:
            answer = await self._http.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            log.warning("passthrough.failed", path=path, error=type(exc).__name__)
            raise PassthroughError(502, "opencode is not reachable right now; it may be restarting") from None
        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        if answer.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(
                self._events(answer), status_code=answer.status_code, headers=response_headers
            )
        return StreamingResponse(self._body(answer), status_code=answer.status_code, headers=response_headers)

    async def _body(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Any other answer, streamed; the last bytes of each chunk wait for the next one, so that
        a secret split between two chunks is still redacted."""
        hold = self._redact.longest - 1
        tail = b""
        try:
            async for chunk in answer.aiter_bytes():
                data = self._redact(tail + chunk)
                cut = max(len(data) - hold, 0)
                tail = data[cut:]
                if cut:
                    yield data[:cut]
            if tail:
                yield tail
        finally:
            await answer.aclose()

    async def _events(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Server-sent events, passed on line by line as opencode sends them."""
        try:
            async for line in answer.aiter_lines():
                yield self._redact(line.encode()) + b"\n"
        except httpx.HTTPError:
            pass  # opencode closed the stream (a reload, a restart): the caller reconnects
        finally:
            await answer.aclose()

    async def _rewrite_model(self, body: bytes, form: str, directory: str | None) -> bytes:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return body  # opencode answers a bad (or absurdly nested) body itself
        if not isinstance(parsed, dict):
            return body
        requested = requested_model(parsed, form)
        if requested is None:
            return body
        ref = await self._resolve(requested, directory)
        return json.dumps(with_model(parsed, form, ref)).encode()


class PassthroughError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _directory(request: Request, query: list[tuple[str, str]]) -> str | None:
    """The directory a request works in, as opencode 1.18.33 picks it (the first non-empty of
    `?directory=` and the percent-encoded `x-opencode-directory` header), checked and normalised;
    a bad one is refused here and never reaches opencode."""
    given = [value for key, value in query if key == "directory"]
    if len(given) > 1:
        raise PassthroughError(400, "directory must be given once")
    value: str | None = given[0] if given and given[0] else None
    if value is None:
        header = request.headers.get("x-opencode-directory")
        if not header:
            return None
        try:
            # Header bytes arrive as latin-1; clients percent-encode the UTF-8 path.
            value = unquote(header.encode("latin-1").decode(), errors="strict")
        except UnicodeError:
            raise PassthroughError(400, "x-opencode-directory must be a percent-encoded UTF-8 path") from None
    try:
        return check_directory(value)
    except InvalidDirectory as exc:
        raise PassthroughError(400, str(exc)) from None
