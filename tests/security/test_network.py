"""The network-facing guards (issue 12, items 1, 2, 3, 9, 10), each attack sent at the real sidecar in
front of the real `opencode serve`, as an attacker would, and what opencode's own port shows after.

- beyond loopback without a key, or with a short key, the sidecar does not start;
- on loopback, a web page can't reach opencode by DNS rebinding (a foreign Host) nor from its own
  site (a foreign Origin), over HTTP or a websocket; a same-origin page and clients without Origin can;
- the probe paths are open to GET and HEAD only; nothing else on them reaches opencode;
- Content-Length beside Transfer-Encoding is a 400, never a 500 or a traceback;
- answers are not corrupted where they contain text equal to the caller's key.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.litellm_proxy import free_port
from tests.support.raw_http import exchange
from tests.support.sidecar_process import OPENCODE_BIN, SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# 43 characters of ordinary words: long enough to be accepted, and text an answer may well contain.
KEY = "the-quick-brown-fox-jumps-over-the-lazy-dog"
GATEWAY_KEY = "sk-network-test-gateway-key"
PROBES = ["/livez", "/readyz", "/startupz", "/metrics"]


@pytest.fixture(scope="module")
def fake_gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=fake_upstream.model_list(["m1"]))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def open_sidecar(tmp_path_factory: pytest.TempPathFactory, fake_gateway: fake_upstream.FakeUpstream) -> Iterator[SidecarProcess]:
    """The laptop setup: loopback, no key."""
    sidecar = start_sidecar(tmp_path_factory.mktemp("open"), f"http://127.0.0.1:{fake_gateway.port}", GATEWAY_KEY)
    yield sidecar
    sidecar.stop()


@pytest.fixture(scope="module")
def keyed_sidecar(tmp_path_factory: pytest.TempPathFactory, fake_gateway: fake_upstream.FakeUpstream) -> Iterator[SidecarProcess]:
    sidecar = start_sidecar(
        tmp_path_factory.mktemp("keyed"), f"http://127.0.0.1:{fake_gateway.port}", GATEWAY_KEY,
        api_key=KEY, allowed_hosts="sidecar.internal, 10.0.0.7", allowed_origins="https://app.example.com",
    )
    yield sidecar
    sidecar.stop()


def run_until_exit(tmp_path: Path, **settings: str) -> tuple[int, str]:
    """`python -m sidecar run` with these settings; its exit code and stderr. One that keeps running
    is a failure (and is stopped): every case here must refuse to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        {
            "HOME": str(tmp_path / "home"),
            "SIDECAR_STATE_DIR": str(tmp_path / "state"),
            "SIDECAR_GATEWAY_URL": "http://127.0.0.1:1",
            "SIDECAR_GATEWAY_RETRIES": "0",
            "SIDECAR_OPENCODE_BIN": str(OPENCODE_BIN),
            "SIDECAR_OPENCODE_PORT": str(free_port()),
            **{f"SIDECAR_{k.upper()}": v for k, v in settings.items()},
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        # SIGTERM first, so that the sidecar stops the opencode it started.
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        pytest.fail(f"the sidecar started with {settings}")
    return process.returncode, stderr


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]"])
def test_listening_beyond_loopback_without_a_key_refuses_to_start(tmp_path: Path, address: str) -> None:
    code, stderr = run_until_exit(tmp_path, listen=f"{address}:{free_port()}")
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert "SIDECAR_API_KEY" in line and "shell commands" in line and "openssl rand -hex 32" in line
    assert "127.0.0.1" in line and "Traceback" not in stderr


def test_a_short_key_refuses_to_start(tmp_path: Path) -> None:
    code, stderr = run_until_exit(tmp_path, api_key="hunter2-hunter2", listen=f"0.0.0.0:{free_port()}")
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert "SIDECAR_API_KEY" in line and "32 characters" in line and "openssl rand -hex 32" in line
    assert "hunter2" not in stderr


def assert_refused(response: httpx.Response, status: int, names: str) -> None:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    error_type = {401: "authentication_error", 403: "permission_error", 405: "invalid_request_error"}[status]
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert names in body["error"]["message"]


def session_ids(sidecar: SidecarProcess) -> set[str]:
    """opencode's own list, read on its port: what the sidecar let through, whatever it answered."""
    with sidecar.opencode() as opencode:
        return {session["id"] for session in opencode.get("/session").raise_for_status().json()}


def test_dns_rebinding_never_reaches_opencodes_shell(open_sidecar: SidecarProcess) -> None:
    with open_sidecar.opencode() as opencode:
        session = opencode.post("/session", json={}).raise_for_status().json()["id"]
    before = session_ids(open_sidecar)
    port = open_sidecar.api_url.rsplit(":", 1)[1]
    # What a page on rebind.evil.example sends once its name points at 127.0.0.1.
    evil = {"host": f"rebind.evil.example:{port}", "origin": f"http://rebind.evil.example:{port}"}
    shell_marker, pty_marker = open_sidecar.directory / "SHELL-RAN", open_sidecar.directory / "PTY-RAN"
    with open_sidecar.api() as api:
        shell = {"agent": "build", "command": f"touch {shell_marker}"}
        assert_refused(api.post(f"/session/{session}/shell", json=shell, headers=evil), 403, "SIDECAR_ALLOWED_HOSTS")
        # `exec sleep`: a PTY that had started would still be in opencode's list below.
        pty = {"command": "/bin/sh", "args": ["-c", f"touch {pty_marker}; exec sleep 600"]}
        assert_refused(api.post("/pty", json=pty, headers=evil), 403, "SIDECAR_ALLOWED_HOSTS")
        assert_refused(api.post("/session", json={}, headers=evil), 403, "SIDECAR_ALLOWED_HOSTS")
        # A navigation sends no Origin: the Host alone is refused.
        assert_refused(api.get("/session", headers={"host": evil["host"]}), 403, "SIDECAR_ALLOWED_HOSTS")
        # The same shell from loopback runs (and answers once it has), so the refusal was the guard's.
        control = open_sidecar.directory / "CONTROL-RAN"
        ran = api.post(f"/session/{session}/shell", json={"agent": "build", "command": f"touch {control}"}, timeout=60)
        assert ran.status_code == 200 and control.exists()
    assert not shell_marker.exists() and not pty_marker.exists()
    assert session_ids(open_sidecar) == before
    with open_sidecar.opencode() as opencode:
        assert opencode.get("/pty").raise_for_status().json() == []


def test_a_rebound_websocket_handshake_is_refused(open_sidecar: SidecarProcess) -> None:
    port = open_sidecar.api_url.rsplit(":", 1)[1]
    handshake = (
        f"GET /pty/pty_x/connect HTTP/1.1\r\nHost: rebind.evil.example:{port}\r\n"
        f"Origin: http://rebind.evil.example:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    answer = exchange(open_sidecar.api_url, handshake)
    assert answer.status == 403
    assert "SIDECAR_ALLOWED_HOSTS" in json.loads(answer.body)["error"]["message"]


def test_a_foreign_origin_is_refused_but_same_origin_and_no_origin_work(open_sidecar: SidecarProcess) -> None:
    port = int(open_sidecar.api_url.rsplit(":", 1)[1])
    before = session_ids(open_sidecar)
    foreign = ["http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"http://localhost:{port}"]
    with open_sidecar.api() as api:
        for origin in foreign:
            refused = api.post("/session", json={}, headers={"origin": origin})
            assert_refused(refused, 403, "SIDECAR_ALLOWED_ORIGINS")
        assert session_ids(open_sidecar) == before
        # opencode's web UI through the sidecar: its page and its own requests.
        same = api.post("/session", json={}, headers={"origin": f"http://127.0.0.1:{port}"})
        assert same.status_code == 200
        by_name = {"host": f"localhost:{port}", "origin": f"http://localhost:{port}"}
        assert api.post("/session", json={}, headers=by_name).status_code == 200
        assert api.get("/session").status_code == 200  # a client that sends no Origin
        page = api.get("/", headers={"host": f"[::1]:{port}"})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert len(session_ids(open_sidecar) - before) == 2


def test_listed_hosts_and_origins_are_served_and_the_host_check_comes_before_the_key(keyed_sidecar: SidecarProcess) -> None:
    port = keyed_sidecar.api_url.rsplit(":", 1)[1]
    key = {"x-api-key": KEY}
    with keyed_sidecar.api() as api:
        for host in ["sidecar.internal:4097", "SIDECAR.internal", "10.0.0.7:80", f"127.0.0.1:{port}", "[::1]:9"]:
            assert api.get("/v1/models", headers={**key, "host": host}).status_code == 200, host
        served = api.get("/session", headers={**key, "host": "sidecar.internal"})
        assert served.status_code == 200 and isinstance(served.json(), list)
        # A foreign name is refused before the key is asked for: an attacker learns nothing more.
        assert_refused(api.get("/v1/models", headers={"host": "sidecar.evil.example"}), 403, "SIDECAR_ALLOWED_HOSTS")
        assert_refused(api.get("/livez", headers={"host": "sidecar.evil.example"}), 403, "SIDECAR_ALLOWED_HOSTS")
        assert api.get("/v1/models", headers={**key, "origin": "https://app.example.com"}).status_code == 200
        for origin in ["https://app.example.com:8443", "http://app.example.com", "https://evil.example"]:
            assert_refused(api.get("/v1/models", headers={**key, "origin": origin}), 403, "SIDECAR_ALLOWED_ORIGINS")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_probe_paths_take_only_get_and_head_and_never_forward(keyed_sidecar: SidecarProcess, method: str) -> None:
    with keyed_sidecar.api() as api:
        known = api.get("/v1/status", headers={"x-api-key": KEY}).json()["reloads"]["directories"]
        for path in PROBES:
            directory = f"/tmp/probe-{method.lower()}{path.replace('/', '-')}"
            assert api.get(path, params={"directory": directory}).status_code in (200, 503)
            assert api.head(path).status_code in (200, 503)
            asked = api.request(method, path, params={"directory": directory})
            assert_refused(asked, 401, "API key")
            keyed = api.request(method, path, params={"directory": directory}, headers={"x-api-key": KEY})
            assert_refused(keyed, 405, "GET and HEAD")
            assert keyed.headers["allow"] == "GET, HEAD"
        status = api.get("/v1/status", headers={"x-api-key": KEY}).json()
    assert "/tmp/probe-" not in json.dumps(status)
    assert status["reloads"]["directories"] == known


def test_probe_paths_without_any_key_still_never_forward(open_sidecar: SidecarProcess) -> None:
    with open_sidecar.api() as api:
        for path in PROBES:
            assert_refused(api.post(path, params={"directory": "/tmp/probe-open"}), 405, "GET and HEAD")
        status = api.get("/v1/status").json()
    assert "/tmp/probe-open" not in json.dumps(status)


@pytest.mark.parametrize("path", ["/session", "/v1/models/resolve", "/livez"])
def test_content_length_beside_transfer_encoding_is_a_400(open_sidecar: SidecarProcess, path: str) -> None:
    before = session_ids(open_sidecar)
    host = open_sidecar.api_url.removeprefix("http://")
    body = b'{"model": "m1"}'
    # No `Connection: close`: the sidecar must close by itself, as the body's end is in doubt.
    smuggled = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    answer = exchange(open_sidecar.api_url, smuggled)
    assert answer.status == 400
    error = json.loads(answer.body)["error"]
    assert error["type"] == "invalid_request_error" and "Transfer-Encoding" in error["message"]
    assert answer.headers["connection"] == "close"
    assert session_ids(open_sidecar) == before
    assert "Traceback" not in open_sidecar.log_text()
    assert not [e for e in open_sidecar.events() if e.get("level") in ("error", "critical")]


@pytest.mark.parametrize("shape", ["one-endless-header", "endless-headers"])
def test_a_request_head_without_end_is_a_431_and_never_forwarded(open_sidecar: SidecarProcess, shape: str) -> None:
    """llhttp, the server's parser, takes headers without a bound of its own: the sidecar stops at
    64 KiB, answers 431 and closes, whatever the head is made of."""
    before = session_ids(open_sidecar)
    url = urlsplit(open_sidecar.api_url)
    head = f"POST /session HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n".encode()
    filler = b"a" * 4096 if shape == "one-endless-header" else b"x-filler: " + b"a" * 4000 + b"\r\n"
    received = b""
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + (b"x-endless: " if shape == "one-endless-header" else b""))
        try:
            for _ in range(1024):  # 4 MiB at most, 64 times the bound
                sock.sendall(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us, as it should be: read what it said first
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b"connection: close" in received.lower()
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"]["type"] == "request_too_large"
    assert session_ids(open_sidecar) == before
    assert "Traceback" not in open_sidecar.log_text()
    assert any(event.get("event") == "api.head_too_large" for event in open_sidecar.events())


def test_a_chunked_body_alone_is_forwarded_whole(open_sidecar: SidecarProcess) -> None:
    host = open_sidecar.api_url.removeprefix("http://")
    body = b'{"title": "sent in chunks"}'
    chunked = (
        f"POST /session HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    answer = exchange(open_sidecar.api_url, chunked)
    assert answer.status == 200, answer.body[:300]
    assert json.loads(answer.body)["title"] == "sent in chunks"


def test_answers_keep_the_callers_key_but_never_opencodes_password(keyed_sidecar: SidecarProcess) -> None:
    # opencode's 404 repeats the session id it was asked for: an answer holding any text, stored
    # nowhere (a session title would put the secrets in opencode's database for the audit to find).
    with keyed_sidecar.api() as api:
        kept = api.get(f"/session/ses_{KEY}", headers={"x-api-key": KEY})
        redacted = api.get(f"/session/ses_{keyed_sidecar.password}", headers={"x-api-key": KEY})
    assert kept.status_code == 404 and kept.json()["data"]["message"] == f"Session not found: ses_{KEY}"
    assert redacted.status_code == 404 and redacted.json()["data"]["message"] == "Session not found: ses_[redacted]"
    assert keyed_sidecar.password not in redacted.text
