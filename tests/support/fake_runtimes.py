"""Real HTTP servers on loopback that speak each runtime's model-list shape, for the SDK's tests.

``anthropic``: ``GET /v1/models`` paginated with ``limit``/``after_id`` (at most ``page_size``
per page), ``x-api-key`` checked, Anthropic error bodies. ``cursor``: ``GET /v1/models``
(``{"items": [...]}``, HTTP Basic with the key as user name) and ``GET /v0/models``
(``{"models": [ids]}``, Bearer), each only when listed in ``versions``; Cursor error bodies.
``openai``: an OpenAI-compatible gateway's ``GET /v1/models`` with Bearer.

Answers queued with ``answer_next()`` are sent first, one per request, whatever was asked:
that is how the tests get a 429, a 500 or a body that is not JSON.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Canned:
    status: int
    body: Any = None  # a dict/list is sent as JSON, bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def anthropic_model(model_id: str, display_name: str, created_at: str, **extra: Any) -> dict[str, Any]:
    """A model object as Anthropic's API answers it today, with the fields the SDK doesn't keep."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name,
        "created_at": created_at,
        "max_input_tokens": 200000,
        "max_tokens": 64000,
        "lifecycle": "active",
        "capabilities": {"image_input": {"supported": True}, "thinking": {"supported": True}},
        **extra,
    }


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


class FakeRuntime(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        shape: str,
        models: list[Any],
        *,
        key: str | None = "test-key",
        page_size: int = 2,
        versions: tuple[str, ...] = ("v1", "v0"),
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.shape = shape
        self.models = models
        self.key = key
        self.page_size = page_size
        self.versions = versions
        self.canned: deque[Canned] = deque()
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer_next(self, *answers: Canned) -> None:
        self.canned.extend(answers)


class _Handler(BaseHTTPRequestHandler):
    server: FakeRuntime
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.server.seen.append(Seen(parts.path, query, {k.lower(): v for k, v in self.headers.items()}))
        if self.server.canned:
            canned = self.server.canned.popleft()
            time.sleep(canned.delay)
            self._send(canned.status, canned.body, canned.headers)
            return
        shape = self.server.shape
        if shape == "anthropic":
            self._anthropic(parts.path, query)
        elif shape == "cursor":
            self._cursor(parts.path)
        else:
            self._openai(parts.path)

    def _anthropic(self, path: str, query: dict[str, str]) -> None:
        if path != "/v1/models":
            self._send(404, anthropic_error("not_found_error", f"no route {path}"))
            return
        if self.server.key is not None and self.headers.get("x-api-key") != self.server.key:
            self._send(401, anthropic_error("authentication_error", "invalid x-api-key"))
            return
        models = self.server.models
        start = 0
        if "after_id" in query:
            start = next(i for i, m in enumerate(models) if m["id"] == query["after_id"]) + 1
        size = min(int(query.get("limit", 20)), self.server.page_size)
        page = models[start : start + size]
        self._send(200, {
            "data": page,
            "has_more": start + size < len(models),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        })

    def _cursor(self, path: str) -> None:
        version = path.split("/")[1] if path.count("/") == 2 and path.endswith("/models") else None
        if version not in self.server.versions:
            self._send(404, {"error": {"code": "not_found", "message": f"no route {path}", "helpUrl": "x"}})
            return
        authorization = self.headers.get("authorization", "")
        if version == "v1":
            expected = "Basic " + base64.b64encode(f"{self.server.key}:".encode()).decode()
            body: Any = {"items": self.server.models}
        else:
            expected = f"Bearer {self.server.key}"
            body = {"models": [m["id"] if isinstance(m, dict) else m for m in self.server.models]}
        if self.server.key is not None and authorization != expected:
            self._send(401, {"error": {"code": "unauthorized", "message": "Invalid API key", "helpUrl": "x"}})
            return
        self._send(200, body)

    def _openai(self, path: str) -> None:
        if path != "/v1/models":
            self._send(404, {"error": {"message": "not found"}})
        elif self.server.key is not None and self.headers.get("authorization") != f"Bearer {self.server.key}":
            self._send(401, {"error": {"message": "bad key"}})
        else:
            self._send(200, {"object": "list", "data": self.server.models})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nothing to do


@contextmanager
def running(server: FakeRuntime) -> Iterator[FakeRuntime]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
