"""Issue 16, item 3: opencode's terminal through the sidecar. A terminal runs shell commands, so a
WebSocket upgrade passes every guard a forwarded request passes, and only opencode's own terminal
routes are upgraded at all.

Each hostile upgrade names a fresh directory: had opencode seen it, it would have built an
instance there, and its own log names every directory it builds one for. A later, harmless
request is the barrier that proves the order; one forwarded upgrade proves the log would show it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess, start_sidecar
from tests.support.terminal import create_pty, echoed, open_terminal, pty_ids, read_until, ws_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

KEY = "terminal-key-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    process = start_sidecar(tmp_path_factory.mktemp("terminal-security"), gateway.url, gateway.master_key, api_key=KEY)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.api_url, headers={"x-api-key": KEY}, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def pty(sidecar: SidecarProcess, keyed: httpx.Client) -> str:
    return create_pty(keyed, str(sidecar.directory))


def fresh_directory(tmp_path: Path) -> Path:
    directory = tmp_path / f"unseen-{uuid.uuid4().hex}"
    directory.mkdir()
    return directory


def refused(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The status and body of a refused upgrade. A client library sends its own Host: a foreign one
    goes in a handshake written by hand."""
    if "host" in headers:
        return raw_upgrade(url, headers)
    with pytest.raises(InvalidStatus) as caught:
        with connect(url, additional_headers=headers, proxy=None, open_timeout=10):
            pass
    return caught.value.response.status_code, caught.value.response.body.decode()


def raw_upgrade(url: str, headers: dict[str, str]) -> tuple[int, str]:
    address, _, target = url.removeprefix("ws://").partition("/")
    host, _, port = address.partition(":")
    lines = [
        f"GET /{target} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"opencode:{password}".encode()).decode()


# (path, headers besides Host, status, what the refusal says); {pty} is a live pty's id.
HOSTILE = {
    "no key": ("/pty/{pty}/connect", {}, 401, "API key"),
    "wrong key": ("/pty/{pty}/connect", {"x-api-key": "not-" + KEY}, 401, "API key"),
    "wrong basic": ("/pty/{pty}/connect", {"authorization": basic("not-" + KEY)}, 401, "API key"),
    "opencode's password instead of the key": ("/pty/{pty}/connect", {"authorization": "PASSWORD"}, 401, "API key"),
    "foreign origin": ("/pty/{pty}/connect", {"x-api-key": KEY, "origin": "https://evil.example"}, 403, "Origin"),
    "null origin": ("/pty/{pty}/connect", {"x-api-key": KEY, "origin": "null"}, 403, "Origin"),
    "foreign host": ("/pty/{pty}/connect", {"x-api-key": KEY, "host": "evil.example"}, 403, "Host"),
    "encoded traversal": ("/pty/..%2F..%2Fsession/connect", {"x-api-key": KEY}, 400, "pty id"),
    "encoded slash in id": ("/pty/{pty}%2Fx/connect", {"x-api-key": KEY}, 400, "pty id"),
    "null byte in id": ("/pty/{pty}%00/connect", {"x-api-key": KEY}, 400, "pty id"),
    "not a pty id": ("/pty/session/connect", {"x-api-key": KEY}, 400, "pty id"),
    "dot segment": ("/pty/../event/connect", {"x-api-key": KEY}, 404, "terminals only"),
    "another opencode route": ("/event", {"x-api-key": KEY}, 404, "terminals only"),
    "a session route": ("/session", {"x-api-key": KEY}, 404, "terminals only"),
    "the gateway route": ("/gateway/litellm/v1/models", {"x-api-key": KEY}, 401, "internal token"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_upgrade_is_refused_and_never_reaches_opencode(
    case: str, sidecar: SidecarProcess, keyed: httpx.Client, pty: str, tmp_path: Path
) -> None:
    path, headers, status, says = HOSTILE[case]
    headers = {k: v.replace("PASSWORD", basic(sidecar.password)) for k, v in headers.items()}
    unseen = fresh_directory(tmp_path)
    before = pty_ids(keyed, str(sidecar.directory))
    url = ws_url(sidecar.api_url, path.format(pty=pty)) + f"?directory={unseen}"
    got, body = refused(url, headers)
    assert got == status, body
    assert says in body
    sidecar.opencode_barrier(tmp_path, {"x-api-key": KEY})
    assert f"directory={unseen}" not in sidecar.opencode_log()
    assert pty_ids(keyed, str(sidecar.directory)) == before


def test_the_log_would_show_an_upgrade_that_reached_opencode(
    sidecar: SidecarProcess, keyed: httpx.Client, pty: str, tmp_path: Path
) -> None:
    # The control of the test above: the same upgrade with the key is forwarded, and opencode logs
    # it. (opencode 1.18.33 then holds the handshake of a pty it can't find in a directory it has
    # just loaded: measured 20 s and more, so the answer is not waited for.)
    seen = fresh_directory(tmp_path)
    url = ws_url(sidecar.api_url, f"/pty/{pty}/connect?directory={seen}")
    with contextlib.suppress(InvalidStatus, TimeoutError):
        connect(url, additional_headers={"x-api-key": KEY}, proxy=None, open_timeout=2).close()
    sidecar.opencode_barrier(tmp_path, {"x-api-key": KEY})
    assert f"directory={seen}" in sidecar.opencode_log()


def test_a_message_past_the_frame_bound_closes_the_terminal(sidecar: SidecarProcess, keyed: httpx.Client) -> None:
    pty = create_pty(keyed, str(sidecar.directory))
    with open_terminal(sidecar.api_url, pty, str(sidecar.directory), {"x-api-key": KEY}, max_size=None) as ws:
        ws.send("x" * (1024 * 1024 + 1))
        with pytest.raises(AssertionError, match="1009"):
            read_until(ws, "never shows")
    assert ws.close_code == 1009
    # The sidecar refused it, not opencode: its pty is still there, and takes ordinary input.
    with open_terminal(sidecar.api_url, pty, str(sidecar.directory), {"x-api-key": KEY}) as ws:
        echoed(ws, "still-here")


def test_websockets_past_the_bound_are_refused(gateway: lp.LiteLLMProxy, tmp_path: Path) -> None:
    bounded = start_sidecar(tmp_path / "bounded", gateway.url, gateway.master_key, api_key=KEY, max_websockets="2")
    try:
        with httpx.Client(base_url=bounded.api_url, headers={"x-api-key": KEY}, timeout=30) as client:
            pty = create_pty(client, str(bounded.directory))
        headers = {"x-api-key": KEY}
        with open_terminal(bounded.api_url, pty, str(bounded.directory), headers), open_terminal(
            bounded.api_url, pty, str(bounded.directory), headers
        ):
            status, body = refused(ws_url(bounded.api_url, f"/pty/{pty}/connect"), headers)
            assert status == 503 and "SIDECAR_MAX_WEBSOCKETS" in body
        # Given back once closed (and opencode's side with it, a moment after the client's).
        def reopened() -> bool:
            try:
                with open_terminal(bounded.api_url, pty, str(bounded.directory), headers) as ws:
                    echoed(ws, "freed")
                return True
            except InvalidStatus:
                return False

        bounded.wait_for(reopened, 15, "a WebSocket slot given back")
    finally:
        bounded.stop()
