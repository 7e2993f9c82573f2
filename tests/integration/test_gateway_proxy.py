"""The gateway route (issue 15, item 1) at the real sidecar, called as opencode's providers call it:
OpenAI-compatible chat completions with `Authorization: Bearer <token>`, and the Anthropic Messages
API with the official SDK (`x-api-key: <token>`), through the real LiteLLM proxy to our slow fake
upstream behind it, and straight to a fake gateway of ours where the test must see what arrives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.fake_upstream import Exchange, FakeUpstream
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "gateway-proxy-test-token-5f0c2a9d8e7b6a5f4e3d2c1b"
DIRECT_KEY = "sk-direct-gateway-key-77a1"
TENANT_SECRET = "tenant-secret-3b9e"
# Longer than any gap of the answers that must pass (the `upstream` fixture's 1 s, LiteLLM's first
# answer on a busy machine), shorter than the stalling gateway's.
IDLE_TIMEOUT = 5.0
STALL_DELAY = 12.0


@pytest.fixture(scope="module")
def direct() -> Iterator[FakeUpstream]:
    """A gateway of ours, spoken to without LiteLLM between: what arrives is what the sidecar sent."""
    server = fake_upstream.start_in_thread(delay=0.3, chunks=40)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stalling() -> Iterator[FakeUpstream]:
    """A gateway that falls silent for longer than the idle timeout between two events."""
    server = fake_upstream.start_in_thread(delay=STALL_DELAY, chunks=2)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy, direct: FakeUpstream, stalling: FakeUpstream
) -> Iterator[SidecarProcess]:
    workdir = tmp_path_factory.mktemp("gateway-proxy")
    config = workdir / "gateways.toml"
    config.write_text(f"""
[[gateways]]
id = "litellm"
url = "{gateway.url}"
api_key_env = "LITELLM_KEY"

# The same LiteLLM in the Messages API: the key goes in x-api-key.
[[gateways]]
id = "claude"
url = "{gateway.url}"
npm = "@ai-sdk/anthropic"
api_key_env = "LITELLM_KEY"

[[gateways]]
id = "direct"
url = "{direct.base_url}"
api_key_env = "DIRECT_KEY"
headers = {{ "x-team" = "blue", "x-tenant" = "{{env:TENANT_SECRET}}" }}

[[gateways]]
id = "stalling"
url = "{stalling.base_url}"

[[gateways]]
id = "dead"
url = "http://127.0.0.1:{lp.free_port()}"
""")
    env = {"LITELLM_KEY": gateway.master_key, "DIRECT_KEY": DIRECT_KEY, "TENANT_SECRET": TENANT_SECRET}
    process = start_sidecar(
        workdir, None, None, config=str(config), extra_env=env, gateway_token=TOKEN,
        gateway_idle_timeout=str(IDLE_TIMEOUT),
    )
    yield process
    process.stop()


def route(sidecar: SidecarProcess, gateway_id: str) -> str:
    return f"{sidecar.api_url}/gateway/{gateway_id}/v1"


def bearer() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


def latest(upstream: FakeUpstream, before: int) -> Exchange:
    """The one chat request the upstream received since it had `before`."""
    deadline = time.monotonic() + 30
    while len(upstream.exchanges) <= before:
        assert time.monotonic() < deadline, "the upstream never received the request"
        time.sleep(0.05)
    (exchange,) = upstream.exchanges[before:]
    return exchange


def stream_chat(url: str, model: str, chunks: int) -> tuple[list[float], list[str]]:
    """Read the first `chunks` content events of a streamed completion, each with the time it
    arrived, then close the connection as a cancelled prompt does."""
    arrived: list[float] = []
    texts: list[str] = []
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "count"}]}
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/chat/completions", json=body, headers=bearer()) as answer:
            assert answer.status_code == 200, answer.read()[:300]
            assert answer.headers["content-type"].startswith("text/event-stream")
            for line in answer.iter_lines():
                if not line.startswith("data: {"):
                    continue
                content = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if content:
                    arrived.append(time.time())
                    texts.append(content)
                    if len(texts) == chunks:
                        break
    return arrived, texts


def test_a_completion_through_litellm_answers(sidecar: SidecarProcess) -> None:
    with httpx.Client(timeout=60) as client:
        answer = client.post(
            f"{route(sidecar, 'litellm')}/chat/completions",
            json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer(),
        )
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["choices"][0]["message"]["content"] == "mock answer"
        listed = client.get(f"{route(sidecar, 'litellm')}/models", headers=bearer())
        assert listed.status_code == 200 and "claude-haiku-4-5" in {m["id"] for m in listed.json()["data"]}
        # LiteLLM's own refusal passes as it is: its status, its body.
        unknown = client.post(
            f"{route(sidecar, 'litellm')}/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            headers=bearer(),
        )
        assert unknown.status_code == 400 and "no-such-model" in unknown.text
        assert lp.MASTER_KEY not in unknown.text


def test_streamed_events_arrive_as_litellm_sends_them_and_a_cancel_reaches_the_upstream(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    before = len(upstream.exchanges)
    arrived, texts = stream_chat(route(sidecar, "litellm"), "slow", chunks=3)
    assert texts == ["chunk 0 ", "chunk 1 ", "chunk 2 "]
    exchange = latest(upstream, before)
    # Each event reached the client before the upstream sent the next one (a second later): nothing
    # was held back. Clocks of one machine; the bound on the delay itself is loose.
    for i in range(2):
        assert arrived[i] < exchange.sent_at[i + 1]
        assert arrived[i] - exchange.sent_at[i] < 0.9
    # The client closed its connection: the sidecar closed LiteLLM's, and LiteLLM the upstream's,
    # long before its 45 s answer was over.
    assert exchange.closed_early.wait(20), "the upstream request was not cancelled"
    assert len(exchange.sent_at) < 20


def test_a_direct_gateway_gets_the_real_key_its_headers_and_a_cancel(sidecar: SidecarProcess, direct: FakeUpstream) -> None:
    before = len(direct.exchanges)
    arrived, texts = stream_chat(route(sidecar, "direct"), "slow", chunks=2)
    assert texts == ["chunk 0 ", "chunk 1 "]
    exchange = latest(direct, before)
    assert exchange.path == "/v1/chat/completions"
    headers = exchange.headers
    assert headers["authorization"] == f"Bearer {DIRECT_KEY}"
    assert headers["x-team"] == "blue" and headers["x-tenant"] == TENANT_SECRET
    assert TOKEN not in json.dumps(headers)
    assert arrived[0] < exchange.sent_at[1] and arrived[0] - exchange.sent_at[0] < 0.9
    assert exchange.closed_early.wait(10), "the upstream request was not cancelled"
    assert len(exchange.sent_at) < 40


def test_the_anthropic_sdk_through_the_messages_api(sidecar: SidecarProcess, upstream: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=f"{sidecar.api_url}/gateway/claude", api_key=TOKEN, max_retries=0, timeout=60)
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "mock answer"
    before = len(upstream.exchanges)
    texts: list[str] = []
    with client.messages.stream(model="slow", max_tokens=64, messages=[{"role": "user", "content": "count"}]) as stream:
        for text in stream.text_stream:
            texts.append(text)
            if len(texts) == 2:
                break
    assert "".join(texts).startswith("chunk 0 ")
    exchange = latest(upstream, before)
    assert exchange.closed_early.wait(20), "the upstream request was not cancelled"


def test_silence_past_the_idle_timeout_cuts_the_answer(sidecar: SidecarProcess, stalling: FakeUpstream) -> None:
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "wait"}]}
    received = b""
    started = time.monotonic()
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{route(sidecar, 'stalling')}/chat/completions", json=body, headers=bearer()) as answer:
            assert answer.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):  # the body's end never came
                for chunk in answer.iter_raw():
                    received += chunk
    assert b"chunk 0 " in received and b"chunk 1 " not in received
    assert time.monotonic() - started < STALL_DELAY
    assert sidecar.events("gateway_proxy.answer_cut")


def test_an_unreachable_gateway_is_a_502_naming_it(sidecar: SidecarProcess) -> None:
    with httpx.Client(timeout=60) as client:
        answer = client.post(f"{route(sidecar, 'dead')}/chat/completions", json={"model": "x"}, headers=bearer())
        assert answer.status_code == 502
        error = answer.json()
        assert error["type"] == "error" and "'dead'" in error["error"]["message"]
        missing = client.get(f"{sidecar.api_url}/gateway/nowhere/v1/models", headers=bearer())
        assert missing.status_code == 404 and missing.json()["type"] == "error"


def test_a_redirect_is_not_followed(sidecar: SidecarProcess, stalling: FakeUpstream, tmp_path: Path) -> None:
    elsewhere = fake_upstream.start_in_thread(delay=0.0, chunks=1)
    try:
        stalling.redirect_to = f"{elsewhere.base_url}/models"
        with httpx.Client(timeout=60) as client:
            answer = client.get(f"{route(sidecar, 'stalling')}/models", headers=bearer())
        assert answer.status_code == 502 and "redirect" in answer.json()["error"]["message"]
        assert elsewhere.headers_seen == []
    finally:
        stalling.redirect_to = None
        elsewhere.shutdown()
        elsewhere.server_close()
