"""Issue 13, items 1 and 4, against the real sidecar and the real opencode: event streams held open
through the pass-through leave ordinary requests their connections and are bounded per client and
in total; ten-MiB prompts sent at once are held a few at a time, within the container's memory."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = pytest.mark.integration

STREAMS = 100
# The sidecar container's memory limit in deploy/kubernetes/base/deployment.yaml.
CONTAINER_LIMIT = 256 * 1024 * 1024
# A prompt just under the pass-through's 10 MiB bound, with its image inline as opencode's TUI
# sends a pasted one.
PROMPT_BYTES = 10 * 1024 * 1024 - 4096
PROMPTS = 16
GENEROUS = 30.0


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    # Room for the 100 streams from one client, and 10 more from another, then no more.
    process = start_sidecar(
        tmp_path_factory.mktemp("load-streams"),
        gateway.url,
        gateway.master_key,
        max_streams=str(STREAMS + 10),
        max_streams_per_client=str(STREAMS),
    )
    yield process
    process.stop()


class Stream:
    """A `GET /event` on a socket of its own, from a chosen loopback address (the peer the
    sidecar counts by); closing the socket is the client going away."""

    def __init__(self, api_url: str, source: str, path: str = "/event") -> None:
        url = urlsplit(api_url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(GENEROUS)
        self.sock.bind((source, 0))
        self.sock.connect((url.hostname, url.port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"the sidecar closed the stream before answering: {received!r}")
            received += chunk
        head, _, self.rest = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}

    def error(self) -> dict[str, Any]:
        """The JSON body of a refusal (it has a length; an event stream has none)."""
        length = int(self.headers["content-length"])
        while len(self.rest) < length:
            self.rest += self.sock.recv(65536)
        return json.loads(self.rest[:length])

    def close(self) -> None:
        self.sock.close()


def anthropic_error(stream: Stream, status: int, kind: str) -> str:
    assert stream.status == status, (stream.status, stream.rest[:500])
    body = stream.error()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["request_id"].startswith("req_")
    return body["error"]["message"]


def open_streams(api_url: str, source: str, count: int) -> list[Stream]:
    streams = []
    for _ in range(count):
        stream = Stream(api_url, source)
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream"), stream.rest[:500]
        streams.append(stream)
    return streams


def opens_once_freed(api_url: str, source: str, sidecar: SidecarProcess) -> Stream:
    """A stream opened as soon as the sidecar has seen others close (each refusal is closed at once)."""
    opened: list[Stream] = []

    def attempt() -> bool:
        stream = Stream(api_url, source)
        if stream.status == 200:
            opened.append(stream)
            return True
        stream.close()
        return False

    sidecar.wait_for(attempt, GENEROUS, f"a stream from {source} once slots were freed")
    return opened[0]


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.mark.timeout(300)
def test_ordinary_requests_answer_while_100_event_streams_are_open_and_streams_are_bounded(sidecar: SidecarProcess) -> None:
    api = sidecar.api_url
    streams = open_streams(api, "127.0.0.1", STREAMS)
    others: list[Stream] = []
    try:
        # Before issue 13 all 100 connections to opencode were the streams': these waited 30 s for
        # one and failed with 502 "opencode is not reachable... restarting".
        with httpx.Client(base_url=api, timeout=GENEROUS) as client:
            for _ in range(3):
                assert client.get("/config").status_code == 200
                assert client.get("/session").status_code == 200
            created = client.post("/session", json={})
            assert created.status_code == 200 and created.json()["id"].startswith("ses")

        one_too_many = Stream(api, "127.0.0.1")
        message = anthropic_error(one_too_many, 429, "rate_limit_error")
        assert f"already holds {STREAMS} event streams" in message and one_too_many.headers["retry-after"]
        one_too_many.close()

        others = open_streams(api, "127.0.0.2", 10)
        over_total = Stream(api, "127.0.0.3")
        assert f"already holds {STREAMS + 10} event streams" in anthropic_error(over_total, 503, "overloaded_error")
        over_total.close()

        # Clients that go away give their slots back: to any client, and to themselves.
        for stream in streams[:50]:
            stream.close()
        others.append(opens_once_freed(api, "127.0.0.3", sidecar))
        others.append(opens_once_freed(api, "127.0.0.1", sidecar))
    finally:
        for stream in streams + others:
            stream.close()
    assert not sidecar.events("passthrough.failed")


@pytest.mark.timeout(300)
def test_sixteen_ten_mib_prompts_at_once_are_held_a_few_at_a_time_within_the_container_limit(
    sidecar: SidecarProcess,
) -> None:
    image = "A" * (PROMPT_BYTES - 200)
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "parts": [
                {"type": "text", "text": "what is in this picture?"},
                {"type": "file", "mime": "image/png", "filename": "screen.png", "url": f"data:image/png;base64,{image}"},
            ],
        }
    ).encode()
    assert len(body) <= 10 * 1024 * 1024
    start = threading.Barrier(PROMPTS)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=sidecar.api_url, timeout=120) as client:
            start.wait()
            return client.post(
                "/session/ses_notasession/message",
                content=body,
                headers={"content-type": "application/json"},
            )

    with ThreadPoolExecutor(PROMPTS) as pool:
        answers = list(pool.map(send, range(PROMPTS)))
    for answer in answers:
        # opencode's own answer (no such session), never one of ours: none waited out its turn.
        assert answer.status_code < 500, answer.text[:500]
        assert answer.json().get("type") != "error", answer.text[:500]
    waited = sidecar.events("passthrough.body_waiting")
    assert waited, "all 16 prompts were held at once"
    assert all(event["held"] + event["size"] > event["limit"] for event in waited)
    assert peak_rss(sidecar.process.pid) < CONTAINER_LIMIT
