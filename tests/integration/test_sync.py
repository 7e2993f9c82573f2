"""The sidecar against the real LiteLLM proxy and the real `opencode serve`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support import litellm_proxy as lp
from tests.support.fixtures import SLOW_CHUNKS
from tests.support.fake_upstream import answer_text as answer_of_upstream
from tests.support.opencode_api import answer_text, busy_sessions, create_session, prompt, provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = pytest.mark.integration


def test_reported_failure_is_fixed_by_one_poll(
    make_gateway: Callable[..., lp.LiteLLMProxy], make_sidecar: Callable[..., SidecarProcess]
) -> None:
    gateway = make_gateway([lp.mock_model("claude-sonnet-4-5")])
    sidecar = make_sidecar(gateway.url)
    directory = str(sidecar.directory)
    with sidecar.opencode() as opencode:
        session = create_session(opencode, directory)
        assert answer_text(prompt(opencode, session, directory, "litellm/claude-sonnet-4-5")) == "mock answer"
        failed = prompt(opencode, session, directory, "litellm/gpt-5.5")
        assert failed.status_code != 200 or failed.json()["info"].get("error"), failed.text[:300]
        assert "gpt-5.5" not in provider_models(opencode, directory)

        gateway = lp.restart_proxy(gateway, [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-5.5", "new model")])
        sidecar.wait_for(lambda: len(sidecar.events("opencode.applied")) >= 2, 60, "the new list applied")

        assert answer_text(prompt(opencode, session, directory, "litellm/gpt-5.5")) == "new model"
    # Neither the sidecar nor opencode restarted on the way.
    assert sidecar.process.poll() is None
    assert len(sidecar.events("child.started")) == 1
    assert sidecar.events("child.exited") == []
    with sidecar.api() as api:
        assert "gpt-5.5" in [m["id"] for m in api.get("/v1/models").json()["data"]]


def test_slow_prompt_is_not_aborted_by_a_list_change(
    tmp_path: Path,
    gateway: lp.LiteLLMProxy,
    make_gateway: Callable[..., lp.LiteLLMProxy],
    make_sidecar: Callable[..., SidecarProcess],
) -> None:
    # The slow prompt streams through the shared gateway, set up as the operator's own provider;
    # the sidecar follows a second gateway, restarted with a new model while the prompt runs.
    base = tmp_path / "team.json"
    base.write_text(json.dumps({"provider": {"team": {
        "npm": "@ai-sdk/openai-compatible",
        # A reference, as an operator should write it: a literal key would land in the file
        # opencode reads (tests/integration/test_zz_secrets.py looks for it there).
        "options": {"baseURL": gateway.base_url, "apiKey": "{env:TEAM_KEY}"},
        "models": {"slow": {"name": "Slow", "limit": {"context": 8000, "output": 1000}}},
    }}}))
    followed = make_gateway([lp.mock_model("claude-sonnet-4-5")])
    # The operator's own provider, not a gateway the sidecar follows: its key is theirs to hand opencode.
    sidecar = make_sidecar(followed.url, base_config=str(base), extra_env={"TEAM_KEY": gateway.master_key})
    busy_dir = str(sidecar.directory)
    other_dir = str(sidecar.workdir / "other")
    os.makedirs(other_dir)

    with sidecar.opencode(timeout=120) as opencode:
        session = create_session(opencode, busy_dir)
        other_session = create_session(opencode, other_dir)
        result: dict[str, object] = {}

        def generate() -> None:
            response = prompt(opencode, session, busy_dir, "team/slow", "take your time")
            result["response"] = response
            result["finished"] = time.monotonic()

        worker = threading.Thread(target=generate)
        worker.start()
        sidecar.wait_for(lambda: busy_sessions(opencode, busy_dir), 30, "the slow prompt to start")

        lp.restart_proxy(followed, [lp.mock_model("claude-sonnet-4-5"), lp.mock_model("gpt-5.5", "new model")])
        sidecar.wait_for(lambda: "gpt-5.5" in provider_models(opencode, other_dir), 60, "gpt-5.5 in another directory")
        assert answer_text(prompt(opencode, other_session, other_dir, "litellm/gpt-5.5")) == "new model"
        used_at = time.monotonic()
        assert busy_sessions(opencode, busy_dir), "the slow prompt should still be generating"

        worker.join(120)
        assert not worker.is_alive()
        text = answer_text(result["response"])  # raises on MessageAbortedError
        assert text == answer_of_upstream(SLOW_CHUNKS), text
        assert used_at < result["finished"]
        # The busy directory was reloaded once it went idle, and then has the new model too.
        sidecar.wait_for(lambda: "gpt-5.5" in provider_models(opencode, busy_dir), 30, "gpt-5.5 in the busy directory")
    deferred = [e for e in sidecar.events("opencode.reload_deferred") if e["directory"] == busy_dir]
    assert deferred, "the busy directory should have been left alone while it generated"
    metrics = httpx.get(f"{sidecar.api_url}/metrics", timeout=5).text
    assert "opencode_sidecar_prompts_aborted_by_reload_total 0.0" in metrics
    assert 'opencode_sidecar_reloads_total{result="deferred"}' in metrics


def test_unchanged_list_causes_no_write_and_no_reload(shared_sidecar: SidecarProcess) -> None:
    config = shared_sidecar.state_dir / "opencode.json"
    shared_sidecar.wait_for(lambda: shared_sidecar.events("opencode.applied"), 30, "first apply")
    before = config.stat().st_mtime_ns, len(shared_sidecar.events("opencode.config_written"))
    reloads = len(shared_sidecar.events("opencode.reloaded"))
    polls = len(shared_sidecar.events("gateway.unchanged"))
    shared_sidecar.wait_for(lambda: len(shared_sidecar.events("gateway.unchanged")) >= polls + 3, 30, "three polls")
    assert (config.stat().st_mtime_ns, len(shared_sidecar.events("opencode.config_written"))) == before
    assert len(shared_sidecar.events("opencode.reloaded")) == reloads
    assert len(shared_sidecar.events("opencode.applied")) == 1


def test_opencode_lists_exactly_the_chat_models(shared_sidecar: SidecarProcess) -> None:
    with shared_sidecar.opencode() as opencode:
        listed = provider_models(opencode, str(shared_sidecar.directory))
    assert set(listed) == {
        "claude-sonnet-4-5", "claude-haiku-4-5", "openai/gpt-4o-mini", "slow",
        "{env:SIDECAR_GATEWAY_API_KEY}", "{file:/etc/hostname}",
    }
    assert listed["claude-sonnet-4-5"]["limit"]["context"] == 200000
    assert listed["claude-sonnet-4-5"]["limit"]["output"] == 64000


def test_hostile_model_names_leak_nothing(shared_sidecar: SidecarProcess) -> None:
    hostname = Path("/etc/hostname").read_text().strip()
    with shared_sidecar.opencode() as opencode:
        listed = provider_models(opencode, str(shared_sidecar.directory))
        all_ids = [p["id"] for p in opencode.get("/config/providers").json()["providers"]]
    shown = [value for key, model in listed.items() for value in (key, model.get("id"), model.get("name"))]
    assert lp.MASTER_KEY not in json.dumps(shown)
    assert hostname not in shown
    assert "{env:SIDECAR_GATEWAY_API_KEY}" in listed
    assert listed["{file:/etc/hostname}"]["name"] == "{file:/etc/hostname}"
    # Only the sidecar's provider: opencode's own free provider is not used behind our back.
    assert all_ids == ["litellm"]
    # The key is never written to disk.
    for path in shared_sidecar.state_dir.glob("*.json"):
        assert lp.MASTER_KEY not in path.read_text()


def test_anthropic_sdk_lists_and_retrieves(shared_sidecar: SidecarProcess) -> None:
    with anthropic.Anthropic(base_url=shared_sidecar.api_url, api_key="unused", max_retries=0) as client:
        ids = [model.id for model in client.models.list(limit=2)]
        assert sorted(ids) == sorted([
            "claude-sonnet-4-5", "claude-haiku-4-5", "openai/gpt-4o-mini", "slow",
            "{env:SIDECAR_GATEWAY_API_KEY}", "{file:/etc/hostname}",
        ])
        model = client.models.retrieve("openai/gpt-4o-mini")
        assert model.id == "openai/gpt-4o-mini" and model.type == "model"
        assert client.models.retrieve("claude-sonnet-4-5").max_input_tokens == 200000
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("no-such-model")


def test_health_endpoints(shared_sidecar: SidecarProcess) -> None:
    with shared_sidecar.api() as api:
        assert api.get("/livez").json() == {"status": "ok"}
        ready = api.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["opencode_healthy"] is True and ready.json()["catalog_applied"] is True


def test_no_secret_in_logs_or_process_listing(shared_sidecar: SidecarProcess) -> None:
    log = shared_sidecar.log_text()
    assert lp.MASTER_KEY not in log and shared_sidecar.password not in log
    pid = shared_sidecar.opencode_pid()
    for process in (pid, shared_sidecar.process.pid):
        cmdline = Path(f"/proc/{process}/cmdline").read_bytes().decode(errors="replace")
        assert lp.MASTER_KEY not in cmdline and shared_sidecar.password not in cmdline
    opencode_log = (shared_sidecar.state_dir / "opencode.log").read_text(errors="replace")
    assert lp.MASTER_KEY not in opencode_log


class FaultyFront:
    """Serves the real gateway's `/v1/models`, or a chosen fault: 500, garbage, or nothing at all.

    Only the list itself fails: a poll also asks LiteLLM's `/model/info`, and a fault switched on
    between a poll's two requests would otherwise hand the sidecar a good list without its
    metadata, which is a different config (a race of the test, seen once in a whole run)."""

    def __init__(self, gateway: lp.LiteLLMProxy) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode = "pass"
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                mode = front.mode if self.path.startswith("/v1/models") else "pass"
                if mode == "500":
                    self._send(500, b'{"error": "boom"}')
                elif mode == "garbage":
                    self._send(200, b"<html>not a model list</html>")
                elif mode == "slow":
                    time.sleep(5)
                    self._send(200, b"{}")
                else:
                    answer = httpx.get(gateway.url + self.path, headers={"authorization": self.headers["authorization"]})
                    self._send(answer.status_code, answer.content)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_gateway_faults_keep_the_last_good_list(
    gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    front = FaultyFront(gateway)
    try:
        sidecar = make_sidecar(front.url)
        directory = str(sidecar.directory)
        with sidecar.opencode() as opencode, sidecar.api() as api:
            good = set(provider_models(opencode, directory))
            assert "claude-sonnet-4-5" in good
            for mode in ("500", "garbage", "slow", "down"):
                failures = len(sidecar.events("gateway.poll_failed"))
                if mode == "down":
                    front.close()
                else:
                    front.mode = mode
                sidecar.wait_for(lambda seen=failures: len(sidecar.events("gateway.poll_failed")) >= seen + 2, 60, f"polls failing ({mode})")
                assert set(provider_models(opencode, directory)) == good
                listed = api.get("/v1/models", params={"limit": 100})
                assert listed.status_code == 200
                assert {m["id"] for m in listed.json()["data"]} == good
                assert api.get("/readyz").status_code == 200
        assert len(sidecar.events("opencode.config_written")) == 1
        errors = [e["error"] for e in sidecar.events("gateway.poll_failed")]
        assert any("HTTP 500" in e for e in errors) and any("malformed" in e for e in errors)
        assert any("timed out" in e for e in errors) and any("ConnectError" in e for e in errors)
    finally:
        front.close()


def test_opencode_killed_comes_back_with_its_sessions(
    gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(gateway.url)
    directory = str(sidecar.directory)
    with sidecar.opencode() as opencode:
        session = create_session(opencode, directory)
        assert answer_text(prompt(opencode, session, directory, "litellm/claude-haiku-4-5")) == "mock answer"
        first = sidecar.opencode_pid()
        os.kill(first, signal.SIGKILL)
        sidecar.wait_for(lambda: sidecar.events("child.exited"), 30, "the crash to be seen")
        sidecar.wait_for(lambda: len(sidecar.events("child.healthy")) >= 2, 60, "opencode back")
        sidecar.wait_ready()
        assert sidecar.opencode_pid() != first
        assert answer_text(prompt(opencode, session, directory, "litellm/claude-haiku-4-5")) == "mock answer"
        messages = opencode.get(f"/session/{session}/message", params={"directory": directory}).json()
        assert len(messages) == 4


def test_sigterm_stops_opencode_too(gateway: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]) -> None:
    sidecar = make_sidecar(gateway.url)
    pid = sidecar.opencode_pid()
    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(30) == 0
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(sidecar.opencode_url + "/global/health", timeout=2)
