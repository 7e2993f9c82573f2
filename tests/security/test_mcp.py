"""Attacks on the MCP server at /mcp (issue 18): it takes the API key or the internal token, and
nothing else; the token opens the MCP server and still nothing of the rest of the API, opencode's
own `/mcp` routes least of all. Sent at the real sidecar (an API key set) in front of the real
opencode; "opencode never saw it" is read in opencode's own log, which names every directory it
builds an instance for, after a later request that it does see (the barrier)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import FakeUpstream
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TOKEN = "security-mcp-token-0c1d2e3f4a5b6c7d8e9f0a1b2c3d"
API_KEY = "security-mcp-api-key-9f8e7d6c5b4a3f2e1d0c9b8a"
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}},
}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: FakeUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(
        tmp_path_factory.mktemp("mcp-attacks"), gateway.base_url, "sk-mcp-gateway-key-1", api_key=API_KEY,
        gateway_token=TOKEN,
    )
    yield process
    process.stop()


def fresh_directory(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / f"{name}-{uuid.uuid4().hex}"
    directory.mkdir()
    return directory


def mcp_post(sidecar: SidecarProcess, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{sidecar.api_url}/mcp", json=body, headers={**MCP_HEADERS, **headers}, timeout=30)


def assert_refused(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    # Our guard's Anthropic-shaped refusal, not a JSON-RPC answer of the MCP server.
    assert answer.json()["type"] == "error" and "jsonrpc" not in answer.json()


def test_the_key_or_the_token_opens_the_mcp_server(sidecar: SidecarProcess) -> None:
    for credential in ({"x-api-key": API_KEY}, {"authorization": f"Bearer {API_KEY}"},
                       {"authorization": f"Bearer {TOKEN}"}):
        answer = mcp_post(sidecar, LIST_TOOLS, **credential)
        assert answer.status_code == 200, answer.text
        names = {tool["name"] for tool in answer.json()["result"]["tools"]}
        assert names == {"list_models", "get_model", "resolve_model"}


@pytest.mark.parametrize(
    "credential",
    [{}, {"x-api-key": "wrong-" + API_KEY}, {"authorization": "Bearer " + TOKEN[:-1]},
     {"authorization": "Basic " + "b3BlbmNvZGU6d3Jvbmc="}, {"x-api-key": ""}],
    ids=["none", "wrong-key", "token-cut-short", "basic-wrong", "empty"],
)
def test_no_key_or_a_wrong_one_is_refused(sidecar: SidecarProcess, credential: dict[str, str]) -> None:
    assert_refused(mcp_post(sidecar, INITIALIZE, **credential), 401)
    assert_refused(mcp_post(sidecar, LIST_TOOLS, **credential), 401)


@pytest.mark.parametrize(
    "foreign",
    [{"host": "evil.example"}, {"host": "evil.example:80"}, {"origin": "https://evil.example"}, {"origin": "null"}],
)
def test_a_foreign_host_or_origin_is_refused_even_with_the_key(sidecar: SidecarProcess, foreign: dict[str, str]) -> None:
    for credential in (API_KEY, TOKEN):
        assert_refused(mcp_post(sidecar, LIST_TOOLS, **foreign, authorization=f"Bearer {credential}"), 403)


def test_the_token_opens_nothing_else(sidecar: SidecarProcess, tmp_path: Path) -> None:
    token = {"authorization": f"Bearer {TOKEN}"}
    status_dir = fresh_directory(tmp_path, "opencode-mcp-status")
    add_dir = fresh_directory(tmp_path, "opencode-mcp-add")
    session_dir = fresh_directory(tmp_path, "opencode-session")
    # opencode's own /mcp routes, as its clients ask them (JSON, no MCP transport headers): its MCP
    # status, and adding a server, which would run any command as opencode.
    status = httpx.get(f"{sidecar.api_url}/mcp", params={"directory": str(status_dir)},
                       headers={**token, "accept": "application/json"}, timeout=30)
    assert_refused(status, 401)
    add = httpx.post(f"{sidecar.api_url}/mcp", params={"directory": str(add_dir)}, headers=token, timeout=30,
                     json={"name": "pwn", "config": {"type": "local", "command": ["touch", str(tmp_path / "pwned")]}})
    assert_refused(add, 401)
    connect = httpx.post(f"{sidecar.api_url}/mcp/sidecar/connect", params={"directory": str(add_dir)},
                         headers={**token, **MCP_HEADERS}, timeout=30)
    assert_refused(connect, 401)
    # The rest of the API: the token is still no API key there.
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/status"), ("POST", "/v1/models/resolve"),
                         ("GET", "/session")):
        answer = httpx.request(method, f"{sidecar.api_url}{path}", params={"directory": str(session_dir)},
                               headers=token, json={"model": "slow"} if method == "POST" else None, timeout=30)
        assert_refused(answer, 401)
    sidecar.opencode_barrier(tmp_path, {"x-api-key": API_KEY})
    log = sidecar.opencode_log()
    for directory in (status_dir, add_dir, session_dir):
        assert str(directory) not in log
    assert not (tmp_path / "pwned").exists()
    # The same status request with the API key does reach opencode, which names our server there.
    control = httpx.get(f"{sidecar.api_url}/mcp", params={"directory": str(status_dir)},
                        headers={"x-api-key": API_KEY, "accept": "application/json"}, timeout=60)
    assert control.status_code == 200 and "sidecar" in control.json(), control.text


def test_an_oversized_body_is_refused_before_it_is_read(sidecar: SidecarProcess) -> None:
    padding = "x" * (128 * 1024)
    answer = mcp_post(sidecar, {**LIST_TOOLS, "params": {"_meta": {"padding": padding}}}, **{"x-api-key": API_KEY})
    assert answer.status_code == 413, answer.text
