"""A follower (fleet mode) whose hub turns hostile, at the real sidecar in front of the real
opencode: a huge body, a slow drip, bad JSON, another gateway's list, hostile model ids, errors that
quote the hub's key. Each is refused with a clear error, the last good list is kept (in /v1/models,
the saved list and opencode's config), and no key shows in the log or the state files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.opencode_process import opencode_processes
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HUB_KEY = "security-hub-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
GATEWAY_KEY = "sk-security-hub-gateway-key-4242"
GOOD = ["good-model", "other-good-model"]
HOSTILE_IDS = ["__proto__", "evil\x1b[2Jid", "x" * 300, " "]


def record(model_id: str) -> dict:
    return {"id": model_id, "display_name": model_id}


def body_of(ids: list[str], version: str, gateway: str = "litellm") -> bytes:
    return json.dumps(
        {"gateway": gateway, "version": version, "listed": len(ids), "models": [record(i) for i in ids], "wildcards": []}
    ).encode()


class HostileHub(ThreadingHTTPServer):
    daemon_threads = True
    mode = "good"
    keys_seen: list[str | None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileHub

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"content-type": "application/json", "content-length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: C901 - one branch per attack
        self.server.keys_seen.append(self.headers.get("authorization"))
        mode = self.server.mode
        try:
            if mode == "good":
                if self.headers.get("if-none-match") == '"good"':
                    self._send(304, b"", etag='"good"')
                else:
                    self._send(200, body_of(GOOD, "good"), etag='"good"')
            elif mode == "huge":
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                chunk = b" " * 65536
                for _ in range(17 * 16 + 1):  # 17 MiB, past the 16 MiB bound
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            elif mode == "drip":
                self.send_response(200)
                self.send_header("content-length", "1000000")
                self.end_headers()
                for _ in range(120):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif mode == "bad_json":
                self._send(200, b'{"gateway": "litellm", "version": "v", "models": [{"id": ', etag='"v"')
            elif mode == "other_gateway":
                self._send(200, body_of(["stolen"], "o", gateway="someone-else"), etag='"o"')
            elif mode == "hostile_ids":
                self._send(200, body_of([*GOOD, *HOSTILE_IDS], "h"), etag='"h"')
            elif mode == "echo_key":
                echo = json.dumps({"error": {"type": "api_error", "message": f"bad key {HUB_KEY}"}}).encode()
                self._send(500, echo)
            elif mode == "redirect":
                self._send(307, b"", location=f"http://evil.example/steal?k={HUB_KEY}")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def hub() -> Iterator[HostileHub]:
    server = HostileHub(("127.0.0.1", 0), Handler)
    server.keys_seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def follower(tmp_path_factory: pytest.TempPathFactory, hub: HostileHub) -> Iterator[SidecarProcess]:
    host, port = hub.server_address[:2]
    process = start_sidecar(
        tmp_path_factory.mktemp("hostile-hub"), "http://127.0.0.1:9", GATEWAY_KEY,
        catalog_url=f"http://{host}:{port}", catalog_api_key=HUB_KEY, poll_interval="2",
    )
    yield process
    process.stop()


def listed(follower: SidecarProcess) -> list[str]:
    with follower.api() as api:
        return sorted(model["id"] for model in api.get("/v1/models").json()["data"])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("huge", "larger than 16777216 bytes"),
        ("drip", "the hub timed out after"),
        ("bad_json", "malformed catalog from the hub: the body is not JSON"),
        ("other_gateway", "another gateway's catalog"),
        ("hostile_ids", "malformed catalog from the hub: models[2].id is '__proto__'"),
        ("echo_key", "the hub answered HTTP 500: bad key [redacted]"),
        ("redirect", "the hub redirected to another address (HTTP 307); not followed"),
    ],
)
def test_a_hostile_hub_is_refused_and_the_last_good_list_kept(
    follower: SidecarProcess, hub: HostileHub, mode: str, expected: str
) -> None:
    assert listed(follower) == sorted(GOOD)
    before = len(follower.events("gateway.poll_failed"))
    hub.mode = mode
    try:
        failed = follower.wait_for(
            lambda: follower.events("gateway.poll_failed")[before:], 60, f"the follower refusing {mode}"
        )
    finally:
        hub.mode = "good"
    assert expected in failed[0]["error"], failed[0]
    assert listed(follower) == sorted(GOOD)
    report = status_of(follower)
    assert report["models"] == len(GOOD) and report["catalog_from"] == follower.env["SIDECAR_CATALOG_URL"]
    assert_nothing_hostile_or_secret_kept(follower, hub)
    # The hub good again (the same version held): the follower's polls succeed again.
    follower.wait_for(lambda: status_of(follower)["last_poll_ok"] is True, 30, "the hub good again")


def status_of(follower: SidecarProcess) -> dict:
    with follower.api() as api:
        return api.get("/v1/status").json()["gateways"]["litellm"]


def assert_nothing_hostile_or_secret_kept(follower: SidecarProcess, hub: HostileHub) -> None:
    log = follower.log_text()
    assert HUB_KEY not in log and GATEWAY_KEY not in log
    assert "evil.example" not in log and "\x1b" not in log and "\\u001b" not in log
    for path in Path(follower.state_dir).rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonc"}:
            text = path.read_text(errors="replace")
            assert HUB_KEY not in text and "stolen" not in text and "__proto__" not in text, path
    # The follower presented the hub's key to the hub, and only there (its gateway is never asked).
    assert set(hub.keys_seen) == {f"Bearer {HUB_KEY}"}


def test_the_hubs_key_never_reaches_opencode(tmp_path: Path, hub: HostileHub) -> None:
    # Its worst case: a [[gateways]] entry naming the hub's key in a variable of its own (not a
    # SIDECAR_* one, which opencode's environment never has), without key custody, where opencode
    # is handed the gateway's key variables.
    host, port = hub.server_address[:2]
    config = tmp_path / "sidecar.toml"
    config.write_text(
        "[[gateways]]\nid = 'litellm'\nurl = 'http://127.0.0.1:9'\napi_key_env = 'GW_KEY'\n"
        f"catalog_url = 'http://{host}:{port}'\ncatalog_api_key_env = 'FLEET_HUB_KEY'\n"
    )
    follower = start_sidecar(
        tmp_path / "env", None, None, config=str(config), key_custody="false",
        extra_env={"FLEET_HUB_KEY": HUB_KEY, "GW_KEY": GATEWAY_KEY},
    )
    try:
        assert listed(follower) == sorted(GOOD)
        leader = follower.opencode_pid()
        for pid in opencode_processes(leader):
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            assert HUB_KEY.encode() not in raw and b"FLEET_HUB_KEY" not in raw
        assert GATEWAY_KEY.encode() in Path(f"/proc/{leader}/environ").read_bytes()  # the check can see a key
        for path in Path(follower.state_dir).rglob("*.json*"):
            assert HUB_KEY not in path.read_text(errors="replace") and "FLEET_HUB_KEY" not in path.read_text(errors="replace")
        assert HUB_KEY not in follower.log_text()
    finally:
        follower.stop()

