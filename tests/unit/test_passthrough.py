import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from sidecar.naming import ModelRef
from sidecar.passthrough import Passthrough, Redactor, model_form, requested_model, with_model

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


def test_redactor_replaces_every_secret() -> None:
    redact = Redactor(["sk-abc", "pw-1"])
    assert redact(b'{"apiKey":"sk-abc","x":"pw-1pw-1"}') == b'{"apiKey":"[redacted]","x":"[redacted][redacted]"}'


@pytest.mark.anyio
async def test_forward_rewrites_model_adds_password_and_redacts() -> None:
    seen: list[httpx.Request] = []

    def opencode(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"echo": request.content.decode(), "key": "sk-abc"})

    async def resolve(requested: object, directory: str | None) -> ModelRef:
        assert directory == "/work/p"
        return REF

    passthrough = Passthrough("http://opencode", "pw-1", resolve, ["sk-abc", "pw-1"], transport=httpx.MockTransport(opencode))
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
        "http://opencode", "password-1", resolve, ["sk-abcdef", "password-1"], transport=httpx.MockTransport(opencode)
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

    passthrough = Passthrough("http://opencode", "pw-1", resolve, [], transport=httpx.MockTransport(opencode))
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

    passthrough = Passthrough("http://opencode", "pw-1", resolve, [], transport=httpx.MockTransport(opencode))
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
