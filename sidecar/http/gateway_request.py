"""The pure half of the gateway route (gateway_proxy.py): where a request under `/gateway/<id>/`
goes, which headers go with it, which model it asks for, and the error a failed exchange ends in.

opencode's provider for a gateway has `baseURL = http://<sidecar>/gateway/<id>/v1`; its SDK
appends `/chat/completions` (@ai-sdk/openai-compatible) or `/messages` (@ai-sdk/anthropic), and the
Anthropic Python SDK given `base_url=http://<sidecar>/gateway/<id>` appends `/v1/messages`. So
`/gateway/<id>/v1/<rest>` goes to `<api_base>/<rest>` (a gateway's api base always ends in `/v1`).
Nothing outside the api base is reachable: LiteLLM's key management (`/key/generate`) lives at its
root, and whoever holds the internal token (anyone with opencode's shell) must not mint keys with
the real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from sidecar.errors import HttpError
from sidecar.http.connections import GATEWAY_CONNECTIONS, HOP_BY_HOP as CONNECTION_HEADERS
from sidecar.http.view import GatewayUpstream

GATEWAY_PREFIX = "/gateway/"
API_SEGMENT = "v1"

# Per connection (RFC 9110 section 7.6.1), or the sidecar's own business (the client's credentials,
# which are the internal token): never forwarded either way. Content-Length is set again when the
# request declared one; Accept-Encoding is replaced by identity (see `request_headers`).
HOP_BY_HOP = CONNECTION_HEADERS | {"expect", "authorization", "x-api-key"}

# The longest silence of a gateway inside one answer (SIDECAR_GATEWAY_IDLE_TIMEOUT): a model may
# think for minutes before the first token of an answer that is not streamed.
DEFAULT_IDLE_TIMEOUT = 300.0

CONNECT_TIMEOUT = 10.0

# How much of a request body is kept aside to find its model: AI SDKs and the Anthropic SDK write
# `model` first, so it is in the first bytes; a model named after 64 KiB of messages is "unknown".
MODEL_PEEK_BYTES = 64 * 1024
UNKNOWN_MODEL = "unknown"
MAX_MODEL_NAME = 200


def proxied_base_url(origin: str, gateway_id: str) -> str:
    """What opencode's provider for a gateway gets as `baseURL` with custody: `origin` is the
    sidecar's own address as opencode reaches it (`http://127.0.0.1:4097`)."""
    return f"{origin.rstrip('/')}{GATEWAY_PREFIX}{gateway_id}/{API_SEGMENT}"


def in_gateway_zone(path: str) -> bool:
    """The paths that take the internal token and nothing else (guards.py asks)."""
    return path == GATEWAY_PREFIX.rstrip("/") or path.startswith(GATEWAY_PREFIX)


@dataclass(frozen=True)
class Target:
    gateway: GatewayUpstream
    url: str


def target_of(raw_path: bytes, query: bytes, gateways: Mapping[str, GatewayUpstream]) -> Target:
    """The upstream URL of a request to `/gateway/<id>/v1/<rest>`, from its path as sent (not as
    decoded). The path is forwarded as sent, so it is checked as the gateway will read it: a
    `..` or `.` segment (encoded or not), an empty segment (`//host`), an encoded `/` or `\\`, or a
    control character is refused with 400 and never sent."""
    path = raw_path.decode("latin-1")
    if not path.startswith(GATEWAY_PREFIX):
        raise HttpError(404, f"no gateway at {_shown(path)}; gateway routes are {GATEWAY_PREFIX}<id>/v1/...")
    gateway_id, _, rest = path[len(GATEWAY_PREFIX) :].partition("/")
    _check_segments(path[len(GATEWAY_PREFIX) :])
    gateway = gateways.get(gateway_id)
    if gateway is None:
        raise HttpError(404, f"no gateway with the id {_shown(gateway_id)!r} behind this sidecar")
    api, slash, below = rest.partition("/")
    if api != API_SEGMENT:
        raise HttpError(
            404,
            f"only the gateway's API is forwarded: {GATEWAY_PREFIX}{gateway_id}/{API_SEGMENT}/... "
            f"goes to {gateway.api_base}/...",
        )
    url = gateway.api_base + (slash + below)
    if query:
        url += "?" + query.decode("latin-1")
    return Target(gateway, url)


def _check_segments(path: str) -> None:
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in path) or "\\" in path:
        raise HttpError(400, "the path holds a control character, a space or a backslash; refused")
    segments = path.split("/")
    for index, segment in enumerate(segments):
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b"..") or (not decoded and index < len(segments) - 1):
            # An empty last segment is a trailing slash (`/v1/models/`), which is harmless.
            raise HttpError(400, "the path has an empty, `.` or `..` segment; refused, never sent to the gateway")
        if b"/" in decoded or b"\\" in decoded or any(b < 0x20 or b == 0x7F for b in decoded):
            raise HttpError(400, "the path has an encoded slash, backslash or control character; refused")


def _shown(text: str) -> str:
    return text[:80] + ("..." if len(text) > 80 else "")


def request_headers(
    incoming: Iterable[tuple[str, str]], gateway: GatewayUpstream, *, declared_length: str | None
) -> list[tuple[str, str]]:
    """The client's headers without hop-by-hop ones, without its credentials (the internal token)
    and without any the sidecar sets itself; then the gateway's key and configured headers.

    Accept-Encoding is identity: LLM answers are small or streamed as events, and an answer whose
    bytes are the gateway's own can be measured and checked for the key on its way."""
    ours = {name.lower() for name in credential_headers(gateway)} | {name.lower() for name in gateway.headers}
    connection_named = set()
    passed: list[tuple[str, str]] = []
    incoming = list(incoming)
    for name, value in incoming:
        if name.lower() == "connection":
            connection_named |= {part.strip().lower() for part in value.split(",")}
    for name, value in incoming:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in ours or lower in connection_named:
            continue
        passed.append((lower, value))
    if declared_length is not None:
        passed.append(("content-length", declared_length))
    passed.append(("accept-encoding", "identity"))
    passed.extend(credential_headers(gateway).items())
    passed.extend((name.lower(), value) for name, value in gateway.headers.items())
    return passed


def credential_headers(gateway: GatewayUpstream) -> dict[str, str]:
    """How the gateway wants its key: `x-api-key` for the Anthropic format, `Authorization: Bearer`
    for the others (and Portkey's own header beside it)."""
    if gateway.api_key is None or not gateway.api_key.get_secret_value():
        return {}
    key = gateway.api_key.get_secret_value()
    if gateway.anthropic:
        return {"x-api-key": key}
    headers = {"authorization": f"Bearer {key}"}
    if gateway.portkey:
        headers["x-portkey-api-key"] = key
    return headers


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The gateway's answer headers without the hop-by-hop ones; its length stays (the bytes are
    passed as they come) unless the body is rewritten, where the caller drops it."""
    incoming = list(headers)
    connection_named = set()
    for name, value in incoming:
        if name.lower() == "connection":
            connection_named |= {part.strip().lower() for part in value.split(",")}
    dropped = (HOP_BY_HOP - {"content-length"}) | connection_named
    return [(name.lower(), value) for name, value in incoming if name.lower() not in dropped]


class ModelPeek:
    """The request's top-level `model`, read from the first bytes of its body as they go by: the
    body is not held for it."""

    def __init__(self, limit: int = MODEL_PEEK_BYTES) -> None:
        self.limit = limit
        self._head = bytearray()
        self._model: str | None = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        if self._done:
            return
        self._head += chunk[: self.limit - len(self._head)]
        self._model = model_in(bytes(self._head))
        if self._model is not None or len(self._head) >= self.limit:
            self._done = True
            self._head = bytearray()

    @property
    def model(self) -> str:
        return self._model or UNKNOWN_MODEL


def model_in(head: bytes) -> str | None:
    """The top-level `model` of a JSON object, from its first bytes (whole or cut anywhere): the
    members are decoded one by one until `model`, so a cut in a later member does not matter."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8")
    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    if not text.startswith("{", at):
        return None
    at += 1
    try:
        while True:
            at = _skip_space(text, at)
            key, at = decoder.raw_decode(text, at)
            at = _skip_space(text, at)
            if not isinstance(key, str) or not text.startswith(":", at):
                return None
            value, at = decoder.raw_decode(text, _skip_space(text, at + 1))
            if key == "model":
                return _model_name(value)
            at = _skip_space(text, at)
            if not text.startswith(",", at):
                return None
            at += 1
    except (ValueError, RecursionError):
        return None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _model_name(value: object) -> str:
    # A label of the traffic records: the client's word, so bounded and printable.
    if not isinstance(value, str) or not value or not value.isprintable() or len(value) > MAX_MODEL_NAME:
        return UNKNOWN_MODEL
    return value


class PoolBusy(Exception):
    """No connection to the gateways came free within POOL_WAIT."""

    def __init__(self, connections: int = GATEWAY_CONNECTIONS) -> None:
        super().__init__(connections)
        self.connections = connections


class GatewaySilent(Exception):
    """The gateway took no bytes of the request body for the idle timeout (aiohttp bounds reads only)."""


def failure(
    exc: BaseException, gateway: str, idle_timeout: float, connect_timeout: float = CONNECT_TIMEOUT
) -> HttpError:
    """What went wrong between the sidecar and a gateway, naming the gateway, never its key."""
    if isinstance(exc, PoolBusy):
        return HttpError(
            503,
            f"all {exc.connections} connections from the sidecar to the gateways are busy; retry shortly",
            headers={"retry-after": "1"},
        )
    import aiohttp  # imported already by the exchange that failed (gateway_proxy.py imports it late)

    # aiohttp's two timeouts are both ServerTimeoutError: the connect's, and sock_read's (the idle one).
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return HttpError(504, f"gateway {gateway!r} did not accept a connection within {connect_timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return HttpError(502, f"gateway {gateway!r} is not reachable (the connection failed)")
    if isinstance(exc, (aiohttp.SocketTimeoutError, GatewaySilent)):
        return HttpError(
            504, f"gateway {gateway!r} was silent for {idle_timeout:g} s (SIDECAR_GATEWAY_IDLE_TIMEOUT)"
        )
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return HttpError(502, f"gateway {gateway!r} closed the connection before its answer was whole")
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's parser refused the answer's status line or headers.
        return HttpError(502, f"gateway {gateway!r} answered with something that is not HTTP/1.1")
    return HttpError(502, f"the connection to gateway {gateway!r} failed ({type(exc).__name__})")
