import json
import os
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message

from sidecar.catalog import Catalog
from sidecar.errors import HttpError
from sidecar.http.opencode_routes import model_form, requested_model, with_model
from sidecar.http.passthrough import Passthrough, failure
from sidecar.http.passthrough_limits import ByteBudget, PassthroughLimits, StreamSlots
from sidecar.http.routes import create_app
from sidecar.naming import ModelRef
from tests.support.api_view import ResolveWith, view_of

REF = ModelRef("litellm", "openai/gpt-5.5")


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/session/ses_1/message", "pair"),
        ("POST", "/session/ses_1/prompt_async", "pair"),
        ("POST", "/session/ses_1/shell", "pair"),
        ("POST", "/session/ses_1/command", "string"),
        ("POST", "/session/ses_1/init", "fields"),
        ("POST", "/session/ses_1/summarize", "fields"),
        ("POST", "/session", "id"),
        ("POST", "/api/session", "id"),
        ("POST", "/api/session/ses_1/model", "id"),
        ("GET", "/session/ses_1/message", None),
        ("POST", "/session/ses_1/abort", None),
    ],
)
def test_routes_that_carry_a_model(method: str, path: str, form: str | None) -> None:
    assert model_form(method, path) == form


def test_model_rewritten_in_the_form_opencode_wants() -> None:
    assert with_model({"model": "gpt-5.5", "parts": []}, "pair", REF) == {
        "model": {"providerID": "litellm", "modelID": "openai/gpt-5.5"}, "parts": []
    }
    assert with_model({"model": {"providerID": "x", "modelID": "y"}}, "string", REF) == {"model": "litellm/openai/gpt-5.5"}
    assert with_model({"modelID": "y", "providerID": "x", "messageID": "m"}, "fields", REF) == {
        "modelID": "openai/gpt-5.5", "providerID": "litellm", "messageID": "m"
    }
    assert with_model({"model": {"id": "y", "providerID": "x", "variant": "high"}}, "id", REF) == {
        "model": {"id": "openai/gpt-5.5", "providerID": "litellm", "variant": "high"}
    }
    assert requested_model({"parts": []}, "pair") is None
    assert requested_model({"providerID": "p"}, "fields") is None


@pytest.mark.anyio
async def test_forward_rewrites_model_adds_password_and_redacts() -> None:
    seen: list[httpx.Request] = []

    def opencode(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"echo": request.content.decode(), "key": "sk-abc"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        assert directory == "/work/p"
        return REF

    passthrough = Passthrough("http://opencode", "pw-1", ResolveWith(resolve), ["sk-abc", "pw-1"], transport=httpx.MockTransport(opencode))
    app = Starlette(routes=[Route("/{path:path}", passthrough.forward, methods=["GET", "POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        answer = await client.post(
            "/session/ses_1/message?directory=/work/p&auth_token=abc",
            json={"model": "gpt-5.5", "parts": []},
            headers={"authorization": "Bearer caller-key", "x-api-key": "caller-key"},
        )
    assert answer.status_code == 200
    assert "sk-abc" not in answer.text and "[redacted]" in answer.text
    forwarded = seen[0]
    assert forwarded.url.params["directory"] == "/work/p" and "auth_token" not in forwarded.url.params
    assert forwarded.headers["authorization"].startswith("Basic ")  # opencode's own, not the caller's
    assert "x-api-key" not in forwarded.headers
    assert b'"modelID": "openai/gpt-5.5"' in forwarded.content
    await passthrough.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
async def test_streamed_answer_is_redacted_across_chunk_boundaries(chunk_size: int) -> None:
    body = b'{"options": {"apiKey": "sk-abcdef"}, "pw": "password-1", "tail": "x"}' * 3

    async def chunks():
        for i in range(0, len(body), chunk_size):
            yield body[i : i + chunk_size]

    def opencode(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(), headers={"content-type": "application/json"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        raise AssertionError("no model here")

    passthrough = Passthrough(
        "http://opencode", "password-1", ResolveWith(resolve), ["sk-abcdef", "password-1"], transport=httpx.MockTransport(opencode)
    )
    app = Starlette(routes=[Route("/{path:path}", passthrough.forward, methods=["GET"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        answer = await client.get("/config")
    expected = body.replace(b"sk-abcdef", b"[redacted]").replace(b"password-1", b"[redacted]")
    assert answer.content == expected
    await passthrough.aclose()


@pytest.mark.anyio
async def test_an_absurdly_nested_body_is_forwarded_as_it_is_not_a_500() -> None:
    seen: list[bytes] = []

    def opencode(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(400, json={"error": "bad body"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        raise AssertionError("nothing to resolve in a body that isn't JSON we can read")

    passthrough = Passthrough("http://opencode", "pw-1", ResolveWith(resolve), [], transport=httpx.MockTransport(opencode))
    app = Starlette(routes=[Route("/{path:path}", passthrough.forward, methods=["POST"])])
    body = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        answer = await client.post("/session/ses_1/message", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and seen == [body]
    await passthrough.aclose()


@pytest.mark.anyio
async def test_a_chunked_body_is_never_given_the_callers_content_length() -> None:
    # The API refuses Content-Length beside Transfer-Encoding first; should one get here, the
    # stream goes on chunked, whole, and without a length opencode would cut it at.
    seen: list[httpx.Request] = []

    async def opencode(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        return httpx.Response(200, json={})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        raise AssertionError("no model here")

    passthrough = Passthrough("http://opencode", "pw-1", ResolveWith(resolve), [], transport=httpx.MockTransport(opencode))
    app = Starlette(routes=[Route("/{path:path}", passthrough.forward, methods=["POST"])])
    body = b'{"parts": []}' * 100
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
        request = client.build_request("POST", "/file/upload", content=body)
        request.headers["content-length"] = "5"
        request.headers["transfer-encoding"] = "chunked"
        assert (await client.send(request)).status_code == 200
        declared = client.build_request("POST", "/file/upload", content=body)
        assert (await client.send(declared)).status_code == 200
    assert "content-length" not in seen[0].headers and seen[0].content == body
    assert seen[1].headers["content-length"] == str(len(body)) and seen[1].content == body
    await passthrough.aclose()


# --- bounded under load (issue 13) ----------------------------------------------------------------

def anthropic_error(answer: httpx.Response, status: int, kind: str) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("exc", "status", "words"),
    [
        (httpx.PoolTimeout("x"), 503, "all 100 connections from the sidecar to opencode are busy"),
        (httpx.ConnectError("x"), 502, "not reachable"),
        (httpx.ConnectTimeout("x"), 504, "did not accept a connection in time"),
        (httpx.ReadTimeout("x"), 504, "did not answer in time"),
        (httpx.RemoteProtocolError("x"), 502, "closed the connection before it answered"),
        (httpx.LocalProtocolError("x"), 502, "not valid HTTP"),
        (httpx.ReadError("x"), 502, "failed during the request (ReadError)"),
    ],
)
def test_each_failure_says_what_happened(exc: httpx.HTTPError, status: int, words: str) -> None:
    error = failure(exc, 100)
    assert error.status == status and words in error.message
    # Only a refused connection is "restarting": a full pool (the case) is not.
    assert ("restarting" in error.message) == isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def test_stream_slots_bound_each_client_then_the_total() -> None:
    slots = StreamSlots(total=3, per_client=2)
    slots.take("10.0.0.1")
    slots.take("10.0.0.1")
    with pytest.raises(HttpError) as refused:
        slots.take("10.0.0.1")
    assert refused.value.status == 429 and "SIDECAR_MAX_STREAMS_PER_CLIENT" in refused.value.message
    slots.take("10.0.0.2")
    with pytest.raises(HttpError) as full:
        slots.take("10.0.0.3")
    assert full.value.status == 503 and "SIDECAR_MAX_STREAMS" in full.value.message
    slots.give("10.0.0.1")
    slots.take("10.0.0.3")
    assert slots.open == 3 and slots.held == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 1}


@pytest.mark.anyio
async def test_byte_budget_waits_for_room_then_refuses() -> None:
    budget = ByteBudget(100, wait=0)
    await budget.take(60)
    with pytest.raises(HttpError) as refused:
        await budget.take(41)
    assert refused.value.status == 503 and "SIDECAR_BODY_MEMORY" in refused.value.message
    await budget.take(40)
    budget.give(60)
    budget.give(40)
    assert budget.held == 0 and budget.waits == 1

    patient = ByteBudget(100, wait=60)
    await patient.take(100)
    taken = anyio.Event()

    async def second() -> None:
        await patient.take(50)
        taken.set()

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        while patient.waits == 0:
            await anyio.sleep(0)
        assert not taken.is_set() and patient.held == 100
        patient.give(100)
        await taken.wait()
    assert patient.held == 50


async def never_ending_events() -> AsyncIterator[bytes]:
    yield b"data: {\"type\":\"server.connected\"}\n\n"
    await anyio.sleep_forever()


def streaming_passthrough(limits: PassthroughLimits, ordinary: list[str], streamed: list[str]) -> Passthrough:
    def opencode(request: httpx.Request) -> httpx.Response:
        ordinary.append(request.url.path)
        return httpx.Response(200, json={"ok": True})

    def opencode_streams(request: httpx.Request) -> httpx.Response:
        streamed.append(request.url.path)
        return httpx.Response(200, content=never_ending_events(), headers={"content-type": "text/event-stream"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        return REF

    return Passthrough(
        "http://opencode", "pw", ResolveWith(resolve), [], limits=limits,
        transport=httpx.MockTransport(opencode), stream_transport=httpx.MockTransport(opencode_streams),
    )


class OpenStream:
    """One GET through the whole app on a raw ASGI call, held open until `disconnect()`: httpx's
    ASGITransport waits for the whole answer, which an event stream never ends."""

    def __init__(self, app: object, path: str, peer: str) -> None:
        self.app, self.path, self.peer = app, path, peer
        self.started = anyio.Event()
        self.gone = anyio.Event()
        self.status = 0
        self.body = b""

    async def run(self) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
            "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1")],
            "client": (self.peer, 50000), "server": ("127.0.0.1", 4097),
        }
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.started.set()
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        await self.app(scope, receive, send)  # type: ignore[operator]
        self.started.set()

    def disconnect(self) -> None:
        self.gone.set()


@pytest.mark.anyio
async def test_streams_have_their_own_connections_bounds_and_slots_freed_on_disconnect() -> None:
    ordinary: list[str] = []
    streamed: list[str] = []
    passthrough = streaming_passthrough(PassthroughLimits(max_streams=3, max_streams_per_client=2), ordinary, streamed)
    app = create_app(view_of(lambda: Catalog([]), lambda: {"ready": True}, passthrough=passthrough))
    async with anyio.create_task_group() as group:
        streams = [OpenStream(app, "/event", "10.0.0.1"), OpenStream(app, "/global/event", "10.0.0.1"),
                   OpenStream(app, "/event", "10.0.0.2")]
        for stream in streams:
            group.start_soon(stream.run)
            await stream.started.wait()
            assert stream.status == 200
        assert passthrough.streams.open == 3 and streamed == ["/event", "/global/event", "/event"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1)), base_url="http://127.0.0.1") as one:
            message = anthropic_error(await one.get("/event"), 429, "rate_limit_error")
            assert "2 event streams" in message
            # Ordinary requests are not held up by the streams: they go to the other client.
            assert (await one.get("/config")).status_code == 200 and ordinary == ["/config"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 1)), base_url="http://127.0.0.1") as other:
            message = anthropic_error(await other.get("/event"), 503, "overloaded_error")
            assert "3 event streams" in message
        streams[0].disconnect()
        streams[2].disconnect()
        with anyio.fail_after(5):
            while passthrough.streams.open != 1:
                await anyio.sleep(0.01)
        assert passthrough.streams.held == {"10.0.0.1": 1}
        assert b"server.connected" in streams[0].body
        streams[1].disconnect()
    assert passthrough.streams.open == 0 and passthrough.streams.held == {}
    await passthrough.aclose()


@pytest.mark.anyio
async def test_an_event_stream_from_another_route_counts_too() -> None:
    def opencode(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=never_ending_events(), headers={"content-type": "text/event-stream"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        return REF

    passthrough = Passthrough(
        "http://opencode", "pw", ResolveWith(resolve), [], limits=PassthroughLimits(max_streams=1, max_streams_per_client=1),
        transport=httpx.MockTransport(opencode),
    )
    app = create_app(view_of(lambda: Catalog([]), lambda: {"ready": True}, passthrough=passthrough))
    async with anyio.create_task_group() as group:
        first = OpenStream(app, "/some/new/stream", "10.0.0.1")
        group.start_soon(first.run)
        await first.started.wait()
        assert first.status == 200 and passthrough.streams.open == 1
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1)), base_url="http://127.0.0.1") as client:
            anthropic_error(await client.get("/another/stream"), 429, "rate_limit_error")
        first.disconnect()
    assert passthrough.streams.open == 0
    await passthrough.aclose()


@pytest.mark.anyio
async def test_a_full_pool_is_a_503_that_says_so_not_restarting() -> None:
    def opencode(request: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("no connection free")

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        return REF

    passthrough = Passthrough("http://opencode", "pw", ResolveWith(resolve), [], transport=httpx.MockTransport(opencode))
    app = create_app(view_of(lambda: Catalog([]), lambda: {"ready": True}, passthrough=passthrough))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        answer = await client.get("/config")
    message = anthropic_error(answer, 503, "overloaded_error")
    assert "busy" in message and "restarting" not in message and answer.headers["retry-after"] == "1"
    await passthrough.aclose()


def prompt_passthrough(limits: PassthroughLimits, release: anyio.Event, resolving: anyio.Event, seen: list[int]) -> Passthrough:
    def opencode(request: httpx.Request) -> httpx.Response:
        seen.append(len(request.content))
        return httpx.Response(200, json={})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        resolving.set()
        await release.wait()
        return REF

    return Passthrough("http://opencode", "pw", ResolveWith(resolve), [], limits=limits, transport=httpx.MockTransport(opencode))


# A prompt with a pasted image, as opencode's TUI sends it: the file inline as a base64 data URL.
PROMPT = json.dumps(
    {"model": "gpt-5.5", "parts": [{"type": "file", "mime": "image/png", "url": "data:image/png;base64," + "A" * 100_000}]}
)


async def chunked_prompt() -> AsyncIterator[bytes]:
    for i in range(0, len(PROMPT), 4096):
        yield PROMPT[i : i + 4096].encode()


@pytest.mark.anyio
async def test_a_prompt_past_the_bytes_held_waits_then_is_refused() -> None:
    release, resolving, seen = anyio.Event(), anyio.Event(), []
    passthrough = prompt_passthrough(PassthroughLimits(body_memory=150_000, body_wait=0), release, resolving, seen)
    app = create_app(view_of(lambda: Catalog([]), lambda: {"ready": True}, passthrough=passthrough))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        answers: list[httpx.Response] = []

        async def first() -> None:
            answers.append(await client.post("/session/ses_1/message", content=PROMPT))

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await resolving.wait()
            assert passthrough.bodies.held == len(PROMPT)
            refused = await client.post("/session/ses_1/message", content=PROMPT)
            assert "SIDECAR_BODY_MEMORY" in anthropic_error(refused, 503, "overloaded_error")
            assert refused.headers["retry-after"] == "1"
            anthropic_error(await client.post("/session/ses_2/message", content=chunked_prompt()), 503, "overloaded_error")
            assert passthrough.bodies.held == len(PROMPT)
            release.set()
        assert answers[0].status_code == 200 and passthrough.bodies.held == 0
        assert (await client.post("/session/ses_1/message", content=chunked_prompt())).status_code == 200
    assert passthrough.bodies.held == 0 and len(seen) == 2
    await passthrough.aclose()


@pytest.mark.anyio
async def test_prompts_past_the_bytes_held_wait_their_turn() -> None:
    release, resolving, seen = anyio.Event(), anyio.Event(), []
    passthrough = prompt_passthrough(PassthroughLimits(body_memory=150_000), release, resolving, seen)
    app = create_app(view_of(lambda: Catalog([]), lambda: {"ready": True}, passthrough=passthrough))
    answers: list[int] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:

        async def send(content: object) -> None:
            answers.append((await client.post("/session/ses_1/message", content=content)).status_code)  # type: ignore[arg-type]

        async with anyio.create_task_group() as group:
            group.start_soon(send, PROMPT)
            await resolving.wait()
            group.start_soon(send, PROMPT)
            group.start_soon(send, chunked_prompt())
            while passthrough.bodies.waits < 2:
                await anyio.sleep(0)
            assert passthrough.bodies.held <= 150_000 and answers == []
            release.set()
    assert answers == [200, 200, 200] and passthrough.bodies.held == 0 and len(seen) == 3
    await passthrough.aclose()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SIDECAR_MAX_STREAMS", "0", "SIDECAR_MAX_STREAMS: Input should be greater than or equal to 1"),
        ("SIDECAR_MAX_STREAMS_PER_CLIENT", "some", "SIDECAR_MAX_STREAMS_PER_CLIENT: "),
        ("SIDECAR_BODY_MEMORY", "1048576", "SIDECAR_BODY_MEMORY: Input should be greater than or equal to 10485760"),
    ],
)
def test_load_limits_are_settings_and_a_bad_one_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    from sidecar.settings import SettingsError, load_settings

    for variable in [name for name in os.environ if name.startswith("SIDECAR_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    assert load_settings().passthrough_limits == PassthroughLimits()
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(fragment) and "\n" not in str(caught.value)
    monkeypatch.setenv("SIDECAR_MAX_STREAMS", "1000")
    monkeypatch.setenv("SIDECAR_MAX_STREAMS_PER_CLIENT", "10")
    monkeypatch.setenv("SIDECAR_BODY_MEMORY", str(64 * 1024 * 1024))
    assert load_settings().passthrough_limits == PassthroughLimits(1000, 10, 64 * 1024 * 1024)
