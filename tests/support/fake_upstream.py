"""A tiny OpenAI-compatible upstream for tests: slow, streaming, deterministic.

Run it as ``python -m tests.support.fake_upstream --port P [--delay S] [--chunks N]``;
it prints ``ready`` once the socket is listening. Or import it and call
``start_in_thread()``. It stands behind LiteLLM as the upstream of a "slow" model, so
tests can keep a prompt generating in opencode for as long as they need.

Streaming answers send ``chunks`` content chunks ``delay`` seconds apart, then a chunk
with ``finish_reason: "stop"`` and ``usage``, then ``data: [DONE]``. The full text is
``"chunk 0 chunk 1 ... chunk N-1 "``.

The model ``tool-caller`` (TOOL_CALLER) is scripted instead: asked with a tool whose name ends in
``tool_suffix`` (``_list_models`` by default) offered and no tool result yet, it streams a call of
that tool (OpenAI ``tool_calls``, arguments ``tool_arguments``); asked again with the result, it
streams ``TOOL_ANSWER_PREFIX`` and the result's text back as its answer.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATED = 1700000000
TOOL_CALLER = "tool-caller"
TOOL_ANSWER_PREFIX = "the tool said: "


def model_list(ids: list[str]) -> dict:
    """An OpenAI-shaped `GET /v1/models` answer listing `ids`, for `FakeUpstream.models`."""
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "fake"} for i in ids]}


def answer_text(chunks: int) -> str:
    return "".join(f"chunk {i} " for i in range(chunks))


@dataclass
class Exchange:
    """One chat request as the upstream saw it, whole, and what became of its answer."""

    path: str
    headers: dict[str, str]
    body: dict
    # time.time() just after each content event of a streamed answer was written.
    sent_at: list[float] = field(default_factory=list)
    # Set when the client closed the connection before the answer's end (a write failed).
    closed_early: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class FakeUpstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, delay: float = 0.5, chunks: int = 5, models: dict | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay = delay
        self.chunks = chunks
        # What GET /v1/models (and /api/v1/models) answers; a list of one "slow" model by default.
        self.models = models or {
            "object": "list",
            "data": [{"id": "slow", "object": "model", "created": CREATED, "owned_by": "fake"}],
        }
        # Every chat request body received, and the headers of every request, for assertions.
        self.requests: list[dict] = []
        self.headers_seen: list[dict[str, str]] = []
        # Every whole chat request, with its headers and its answer's fate (a body cut short is none).
        self.exchanges: list[Exchange] = []
        # The paths of chat requests whose connection ended before their body was whole.
        self.cut_short: list[str] = []
        # Hostile answers to GET /v1/models: a body this many bytes long, or a redirect there.
        self.huge_list_bytes = 0
        self.redirect_to: str | None = None
        # Seconds GET /v1/models takes, and how many such requests came.
        self.list_delay = 0.0
        self.list_requests = 0
        # What the TOOL_CALLER model calls: the offered tool whose name ends so, with these arguments.
        self.tool_suffix = "_list_models"
        self.tool_arguments: dict = {}
        # Models whose chat requests are refused as OpenAI refuses a model it has no such of: a 404
        # "The model `x` does not exist" (a listed model broken upstream, issue 17).
        self.refused_models: set[str] = set()
        # A careless gateway: its refusals quote the request's Authorization header (the key).
        self.refusals_echo_key = False
        # `models` and its JSON, encoded once per list assigned (bench/scale: 10,000 models took
        # this server ~20 ms a request to encode, counted in the sidecar's fetch).
        self._encoded: tuple[object, bytes] = (None, b"")

    def models_body(self) -> bytes:
        models = self.models
        if self._encoded[0] is not models:
            self._encoded = (models, json.dumps(models).encode())
        return self._encoded[1]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeUpstream

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.split("?")[0] in ("/v1/models", "/models", "/api/v1/models"):
            self.server.list_requests += 1
            time.sleep(self.server.list_delay)
            if self.server.redirect_to:
                self.send_response(302)
                self.send_header("Location", self.server.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.server.huge_list_bytes:
                self._send_huge(self.server.huge_list_bytes)
            else:
                self._send_body(200, self.server.models_body())
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.split("?")[0] not in ("/v1/chat/completions", "/chat/completions", "/api/v1/chat/completions"):
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        raw = self._read_body()
        if raw is None:
            self.server.cut_short.append(self.path)  # no request to answer
            return
        body = json.loads(raw or b"{}")
        self.server.requests.append(body)
        exchange = Exchange(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self.server.exchanges.append(exchange)
        model = body.get("model", "slow")
        if isinstance(model, str) and model in self.server.refused_models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            if self.server.refusals_echo_key:
                message += f" (authorization: {self.headers.get('Authorization')})"
            self._send_json(404, {"error": {"message": message, "type": "invalid_request_error", "code": "model_not_found"}})
            exchange.finished.set()
            return
        try:
            if model == TOOL_CALLER and body.get("stream"):
                self._stream_script(model, body)
            elif body.get("stream"):
                self._stream(model, exchange)
            else:
                self._send_json(200, self._completion(model))
        finally:
            exchange.finished.set()

    def _read_body(self) -> bytes | None:
        """The request body, by its length or its chunks; None when the connection ends first."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size_line = self.rfile.readline()
                if not size_line.strip():
                    return None
                size = int(size_line.split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)
                if len(chunk) < size + 2:
                    return None
                if size == 0:
                    return data
                data += chunk[:size]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        return raw if len(raw) == length else None

    def _completion(self, model: str) -> dict:
        chunks = self.server.chunks
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer_text(chunks)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(chunks),
        }

    def _stream(self, model: str, exchange: Exchange) -> None:
        # HTTP/1.0 without Content-Length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def chunk(delta: dict, finish_reason: str | None = None, **extra: object) -> dict:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }

        chunks = self.server.chunks
        try:
            self._event(chunk({"role": "assistant", "content": ""}))
            for i in range(chunks):
                if i:
                    time.sleep(self.server.delay)
                # Recorded before the write: a client may read the event and look here before
                # this thread runs again (a busy machine's scheduling, seen in a full run).
                exchange.sent_at.append(time.time())
                self._event(chunk({"content": f"chunk {i} "}))
            self._event(chunk({}, "stop", usage=_usage(chunks)))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            exchange.closed_early.set()  # the client gave up (an aborted prompt)

    def _stream_script(self, model: str, body: dict) -> None:
        """TOOL_CALLER's turn: the tool call first, then the tool's result echoed as the answer."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return {"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": CREATED, "model": model,
                    "choices": [choice]}

        results = [m for m in body.get("messages", []) if m.get("role") == "tool"]
        offered = [t.get("function", {}).get("name", "") for t in body.get("tools", [])]
        wanted = [name for name in offered if name.endswith(self.server.tool_suffix)]
        if results or not wanted:
            content = results[-1].get("content") if results else "no tool offered"
            text = content if isinstance(content, str) else json.dumps(content)
            self._event(chunk({"role": "assistant", "content": TOOL_ANSWER_PREFIX + text}))
            self._event(chunk({}, "stop"))
        else:
            call = {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": wanted[0], "arguments": json.dumps(self.server.tool_arguments)}}
            self._event(chunk({"role": "assistant", "content": None, "tool_calls": [call]}))
            self._event(chunk({}, "tool_calls"))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _send_huge(self, size: int) -> None:
        """A JSON-looking body of `size` bytes, streamed without a length, never held whole."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * 65536
        try:
            self.wfile.write(b'{"data": [')
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
            self.wfile.write(b"]}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader stopped at its bound, as it should

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict) -> None:
        self._send_body(status, json.dumps(payload).encode())

    def _send_body(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _usage(chunks: int) -> dict:
    return {"prompt_tokens": 10, "completion_tokens": 2 * chunks, "total_tokens": 10 + 2 * chunks}


def start_in_thread(port: int = 0, delay: float = 0.5, chunks: int = 5, models: dict | None = None) -> FakeUpstream:
    """Listen on 127.0.0.1 (a free port by default) and serve from a daemon thread.

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    server = FakeUpstream(port, delay, chunks, models)
    threading.Thread(target=server.serve_forever, name="fake-upstream", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds between chunks")
    parser.add_argument("--chunks", type=int, default=5, help="content chunks per answer")
    args = parser.parse_args(argv)
    server = FakeUpstream(args.port, args.delay, args.chunks)
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
