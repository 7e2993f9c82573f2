"""Attacks on the instance announcement route (issue 16): only the internal token opencode holds
may name a directory there, and a bad directory is refused with the token too. "Nothing tracked"
is read from /v1/status: a directory the sidecar tracks is the only way an announcement reaches
opencode (the applier then lists that directory's models there)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import FakeUpstream
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "security-announce-token-5a6b7c8d9e0f1a2b3c4d5e6f"
API_KEY = "security-announce-api-key-0f1e2d3c4b5a69788796"
PATH = "/sidecar/instances"


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: FakeUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("announce-attacks"), gateway.base_url, "sk-announce-gw", api_key=API_KEY,
        gateway_token=TOKEN,
    )
    yield process
    process.stop()


def tracked(sidecar: SidecarProcess) -> int:
    answer = httpx.get(f"{sidecar.api_url}/v1/status", headers={"x-api-key": API_KEY}, timeout=30)
    return answer.json()["reloads"]["directories"]


def announce(sidecar: SidecarProcess, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{sidecar.api_url}{PATH}", content=content, headers=headers or {}, timeout=30)


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"opencode:{secret}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": API_KEY},
        {"authorization": f"Bearer {API_KEY}"},
        {"authorization": basic(API_KEY)},
        {"authorization": basic(TOKEN)},  # the token, but not the way opencode sends it
        {"authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["no key", "api key", "api key bearer", "api key basic", "token basic", "wrong token"],
)
def test_announcements_without_the_internal_token_are_refused(
    sidecar: SidecarProcess, tmp_path: Path, headers: dict[str, str]
) -> None:
    before = tracked(sidecar)
    answer = announce(sidecar, {"directory": str(tmp_path)}, headers)
    assert answer.status_code == 401, answer.text[:300]
    assert answer.json()["type"] == "error"
    assert tracked(sidecar) == before
    assert not any(e.get("directory") == str(tmp_path) for e in sidecar.events("opencode.directory_seen"))


HOSTILE = [
    {"directory": "relative/path"},
    {"directory": "/tmp/../etc"},
    {"directory": "/tmp/a\x00b"},
    {"directory": "/tmp/\u202egnp.exe"},
    {"directory": "/" + "a" * 300},
    {"directory": "/" + "a/" * 2100},
    {"directory": ["/tmp"]},
    {"directory": None},
    {"directory": "/tmp/x", "extra": 1},
    {},
    ["/tmp"],
    b"{not json",
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_a_hostile_directory_is_refused_even_with_the_token(sidecar: SidecarProcess, body: object) -> None:
    before = tracked(sidecar)
    answer = announce(sidecar, body, {"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code in (400, 413), answer.text[:300]
    assert answer.json()["type"] == "error"
    assert tracked(sidecar) == before


def test_a_foreign_host_or_origin_is_refused_before_the_token_is_looked_at(
    sidecar: SidecarProcess, tmp_path: Path
) -> None:
    before = tracked(sidecar)
    token = {"authorization": f"Bearer {TOKEN}"}
    for extra in ({"host": "evil.example"}, {"origin": "https://evil.example"}):
        answer = announce(sidecar, {"directory": str(tmp_path)}, {**token, **extra})
        assert answer.status_code == 403, answer.text[:300]
    assert tracked(sidecar) == before


def test_other_methods_and_the_token_elsewhere_are_refused(sidecar: SidecarProcess) -> None:
    token = {"authorization": f"Bearer {TOKEN}"}
    # No other method falls through to opencode's pass-through with the token.
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
        answer = httpx.request(method, f"{sidecar.api_url}{PATH}", headers=token, timeout=30)
        assert answer.status_code == 405, (method, answer.text[:300])
    # The token opens the announcement and the gateway routes, nothing else of the sidecar or opencode.
    assert httpx.get(f"{sidecar.api_url}/v1/status", headers=token, timeout=30).status_code == 401
    assert httpx.get(f"{sidecar.api_url}/config", headers=token, timeout=30).status_code == 401


def test_control_the_token_with_a_good_directory_is_tracked(sidecar: SidecarProcess, tmp_path: Path) -> None:
    before = tracked(sidecar)
    answer = announce(sidecar, {"directory": str(tmp_path) + "/./"}, {"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 204, answer.text[:300]
    sidecar.wait_for(lambda: tracked(sidecar) == before + 1, 10, "the directory tracked")
    assert any(e.get("directory") == str(tmp_path) for e in sidecar.events("opencode.directory_seen"))
