"""Key custody end to end (issue 15): the real sidecar in front of the real opencode and the real
LiteLLM. opencode's prompts answer through the sidecar's gateway route, in both wire formats, and
are counted in the sidecar's model traffic; a prompt the user stops cancels the model's request; and
the gateway key is nowhere opencode can reach: its environment, its files, its own config answers,
and what its shell prints."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import fake_upstream
from tests.support import litellm_proxy as lp
from tests.support.fake_upstream import Exchange, FakeUpstream
from tests.support.opencode_api import answer_text, create_session, prompt
from tests.support.opencode_process import opencode_processes
from tests.support.sidecar_process import SidecarProcess, start_sidecar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEY = lp.MASTER_KEY
# A key that shows up encoded or turned around is still a key.
NEEDLES = [KEY.encode(), base64.b64encode(KEY.encode()), KEY[::-1].encode()]
# The `direct` gateway's answer: a minute long, far longer than the test waits for its cancel.
DIRECT_CHUNKS = 60
DIRECT_DELAY = 1.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lp.LiteLLMProxy]:
    """A LiteLLM of this module's: a mock model, and `relay`, streamed from an upstream of ours.
    LiteLLM's mock models answer a streamed /v1/messages with one JSON body, not events, which
    opencode's Anthropic provider waits on forever (measured: straight to LiteLLM too)."""
    relay = fake_upstream.start_in_thread(delay=0.0, chunks=2)
    proxy = lp.start_proxy(tmp_path_factory.mktemp("litellm"), [lp.mock_model("claude-sonnet-4-5"), lp.slow_model(relay.base_url, "relay")])
    yield proxy
    lp.stop_proxy(proxy)
    relay.shutdown()
    relay.server_close()


@pytest.fixture(scope="module")
def direct() -> Iterator[FakeUpstream]:
    """A gateway of ours with no LiteLLM between, whose model `slow` streams an event a second:
    what it sees of a connection is what the sidecar did with it."""
    server = fake_upstream.start_in_thread(delay=DIRECT_DELAY, chunks=DIRECT_CHUNKS)
    yield server
    server.shutdown()
    server.server_close()


def gateways_file(directory: Path, gateway: lp.LiteLLMProxy, direct: FakeUpstream) -> Path:
    path = directory / "sidecar.toml"
    path.write_text(f"""
[[gateways]]
id = "litellm"
url = "{gateway.url}"
api_key_env = "GW_KEY"

# The same LiteLLM spoken to in the Messages API (its /v1/messages), as opencode's Anthropic provider.
[[gateways]]
id = "claude"
url = "{gateway.url}"
format = "anthropic"
npm = "@ai-sdk/anthropic"
api_key_env = "GW_KEY"
include = ["relay"]

[[gateways]]
id = "direct"
url = "{direct.base_url}"
""")
    return path


@pytest.fixture(scope="module")
def custody(
    tmp_path_factory: pytest.TempPathFactory, litellm: lp.LiteLLMProxy, direct: FakeUpstream
) -> Iterator[SidecarProcess]:
    """A sidecar following two gateways with one key, under a name of the operator's (GW_KEY),
    which the sidecar itself was started with: the name opencode would have inherited; and a
    third gateway of ours."""
    workdir = tmp_path_factory.mktemp("custody")
    config = gateways_file(workdir, litellm, direct)
    sidecar = start_sidecar(workdir, None, None, config=str(config), extra_env={"GW_KEY": KEY})
    yield sidecar
    sidecar.stop()
    # `env` run in opencode's shell stored opencode's password in its database, as it must (its
    # user may read it): gone, so that tests/integration/test_zz_secrets.py audits for leaks only.
    shutil.rmtree(sidecar.state_dir / "opencode", ignore_errors=True)



def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def holds_key(data: bytes) -> bool:
    return any(needle in data for needle in NEEDLES)


def traffic(sidecar: SidecarProcess) -> dict:
    response = httpx.get(f"{sidecar.api_url}/v1/status", timeout=10)
    assert response.status_code == 200
    return response.json()["traffic"]


def recorded(sidecar: SidecarProcess, gateway: str, model: str) -> dict:
    """The model's `/v1/status` traffic once it counts a request: the route records a request once
    it is over, a moment after its client has had the last byte."""

    def counted() -> dict | None:
        numbers = traffic(sidecar).get(gateway, {}).get(model)
        return numbers if numbers and numbers["requests"] >= 1 else None

    return sidecar.wait_for(counted, 30, f"a request of {gateway}/{model} in /v1/status")


def scrape(sidecar: SidecarProcess) -> Samples:
    response = httpx.get(f"{sidecar.api_url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def model_requests(samples: Samples, gateway: str, model: str) -> dict[str, float]:
    """`opencode_sidecar_model_requests_total` of one model, by status."""
    return {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "opencode_sidecar_model_requests_total" and dict(labels).get("gateway") == gateway
        and dict(labels).get("model") == model
    }


def test_prompts_answer_through_the_sidecars_route_in_both_formats(
    custody: SidecarProcess, litellm: lp.LiteLLMProxy
) -> None:
    rendered = json.loads((custody.state_dir / "opencode.json").read_text())
    for provider in ("litellm", "claude"):
        assert rendered["provider"][provider]["options"] == {
            "baseURL": f"{custody.api_url}/gateway/{provider}/v1", "apiKey": "{env:OPENCODE_SIDECAR_TOKEN}"
        }
    assert rendered["provider"]["claude"]["npm"] == "@ai-sdk/anthropic"
    directory = str(custody.directory)
    with custody.opencode() as opencode:
        session = create_session(opencode, directory)
        # OpenAI-compatible: .../v1/chat/completions; Anthropic: .../v1/messages. opencode has no key
        # (below), so an answer came through the sidecar, which added it.
        assert answer_text(prompt(opencode, session, directory, "litellm/claude-sonnet-4-5")) == "mock answer"
        assert answer_text(prompt(opencode, session, directory, "claude/relay")) == fake_upstream.answer_text(2)
    # Both models' requests are counted, under the gateway and the model opencode asked for.
    used = [("litellm", "claude-sonnet-4-5"), ("claude", "relay")]
    for gateway, model in used:
        assert recorded(custody, gateway, model)["errors"] == 0
    samples = scrape(custody)
    for gateway, model in used:
        assert model_requests(samples, gateway, model).get("200", 0) >= 1, (gateway, model)
    # The token opencode sent is no key of the gateway's: the sidecar put the key in.
    token = environ(custody.opencode_pid())["OPENCODE_SIDECAR_TOKEN"]
    refused = httpx.post(
        f"{litellm.base_url}/chat/completions", headers={"authorization": f"Bearer {token}"},
        json={"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}, timeout=30,
    )
    assert refused.status_code in (400, 401)


def prompt_request(upstream: FakeUpstream, text: str, timeout: float = 60) -> Exchange:
    """The agent's request for the prompt saying `text` (it offers tools; a title request, which
    quotes the prompt too, offers none), once the upstream has sent its first two events."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in upstream.exchanges if text in json.dumps(e.body) and e.body.get("tools")]
        if found and len(found[0].sent_at) >= 2:
            return found[0]
        assert time.monotonic() < deadline, f"the upstream never streamed the prompt's answer: {upstream.requests!r}"[:2000]
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_a_stopped_prompt_cancels_the_model_request_and_is_no_error(
    custody: SidecarProcess, direct: FakeUpstream
) -> None:
    directory = str(custody.directory)
    text = "count slowly, stopped-prompt-" + os.urandom(4).hex()
    with httpx.Client(base_url=custody.api_url, timeout=60) as client:
        # A session with a title of its own: opencode asks no model for one.
        created = client.post("/session", params={"directory": directory}, json={"title": "stopped prompt"})
        assert created.status_code == 200, created.text[:500]
        session = created.json()["id"]
        started = client.post(
            f"/session/{session}/prompt_async", params={"directory": directory},
            json={"parts": [{"type": "text", "text": text}], "model": {"providerID": "direct", "modelID": "slow"}},
        )
        assert started.status_code == 204, started.text[:500]
        exchange = prompt_request(direct, text)
        assert exchange.path == "/v1/chat/completions"
        # The user stops the prompt, as opencode's clients do.
        stopped = client.post(f"/session/{session}/abort", params={"directory": directory})
        assert stopped.status_code == 200, stopped.text[:500]
    # opencode closed its connection to the sidecar, and the sidecar its own to the gateway, long
    # before the minute-long answer was over.
    assert exchange.closed_early.wait(20), "the upstream request was not cancelled"
    assert len(exchange.sent_at) < DIRECT_CHUNKS

    numbers = recorded(custody, "direct", "slow")
    assert numbers["errors"] == 0 and numbers["last_error"] is None
    # The answer had begun: counted under its status, 200; a client leaving is not the model's failure.
    statuses = model_requests(scrape(custody), "direct", "slow")
    assert statuses.get("200", 0) >= 1 and "none" not in statuses, statuses


def test_opencodes_environment_holds_the_token_and_its_password_only(custody: SidecarProcess) -> None:
    leader = custody.opencode_pid()
    pids = opencode_processes(leader)
    assert leader in pids
    for pid in pids:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        assert not holds_key(raw), f"process {pid} of opencode's group holds the gateway key"
        variables = environ(pid)
        assert not [name for name in variables if name.startswith("SIDECAR_")]
        assert "GW_KEY" not in variables
    variables = environ(leader)
    assert variables["OPENCODE_SERVER_PASSWORD"] == custody.password
    token = variables["OPENCODE_SIDECAR_TOKEN"]
    assert len(token) >= 32 and token not in (custody.password, KEY)
    # The sidecar's own environment had the key under both names it reads (GW_KEY here).
    assert environ(custody.process.pid)["GW_KEY"] == KEY


def test_opencodes_own_config_answers_show_no_key(custody: SidecarProcess) -> None:
    directory = str(custody.directory)
    # On opencode's own port with its password: no redaction of the sidecar's in between.
    with custody.opencode() as opencode:
        for path in ("/config", "/config/providers", "/provider"):
            answer = opencode.get(path, params={"directory": directory})
            assert answer.status_code == 200, path
            assert not holds_key(answer.content), path
        providers = {p["id"]: p for p in opencode.get("/config/providers", params={"directory": directory}).json()["providers"]}
    # What opencode resolved as the key is the token.
    token = environ(custody.opencode_pid())["OPENCODE_SIDECAR_TOKEN"]
    assert providers["litellm"]["options"]["apiKey"] == token
    assert providers["claude"]["options"]["apiKey"] == token


def test_opencodes_shell_prints_no_key_and_its_files_hold_none(custody: SidecarProcess) -> None:
    directory = str(custody.directory)
    with custody.opencode(timeout=120) as opencode:
        session = create_session(opencode, directory)
        ran = opencode.post(
            f"/session/{session}/shell",
            params={"directory": directory},
            json={"agent": "build", "command": "env", "model": {"providerID": "litellm", "modelID": "claude-sonnet-4-5"}},
        )
        assert ran.status_code == 200, ran.text[:500]
        # Read back what opencode stored of the command's output.
        stored = opencode.get(f"/session/{session}/message", params={"directory": directory})
        assert stored.status_code == 200
    text = stored.text
    assert "OPENCODE_SIDECAR_TOKEN=" in text, "env's output is not in the session: the check below saw nothing"
    assert not holds_key(stored.content)
    assert "SIDECAR_" not in text.replace("OPENCODE_SIDECAR_TOKEN", "")

    # Every file under opencode's data, config, cache and state directories (its database among
    # them, the shell's output now in it) and the config it reads.
    opencode_home = custody.state_dir / "opencode"
    files = [path for path in opencode_home.rglob("*") if path.is_file() and not path.is_symlink()]
    assert any("opencode" in path.name and path.suffix.startswith(".db") for path in files), "no database found"
    database = b"".join(path.read_bytes() for path in files if ".db" in path.name)
    assert b"OPENCODE_SIDECAR_TOKEN=" in database, "the shell's output is not in opencode's database"
    for path in [*files, custody.state_dir / "opencode.json"]:
        assert not holds_key(path.read_bytes()), path


def test_key_custody_off_is_the_direct_mode_of_before(
    litellm: lp.LiteLLMProxy, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # Without the MCP server's entry too, the token's one use without custody (tests/unit/test_mcp_config.py).
    sidecar = make_sidecar(litellm.url, key_custody="false", mcp="false")
    rendered = json.loads((sidecar.state_dir / "opencode.json").read_text())
    assert rendered["provider"]["litellm"]["options"] == {
        "baseURL": litellm.base_url, "apiKey": "{env:SIDECAR_GATEWAY_API_KEY}"
    }
    variables = environ(sidecar.opencode_pid())
    assert variables["SIDECAR_GATEWAY_API_KEY"] == KEY
    # The internal token, for the instance plugin (issue 16): never the key.
    assert variables["OPENCODE_SIDECAR_TOKEN"] not in (KEY, "")
    directory = str(sidecar.directory)
    with sidecar.opencode() as opencode:
        session = create_session(opencode, directory)
        assert answer_text(prompt(opencode, session, directory, "litellm/claude-sonnet-4-5")) == "mock answer"


def test_attach_mode_with_custody_and_no_token_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update({
        "SIDECAR_GATEWAY_URL": "http://127.0.0.1:1",
        "SIDECAR_OPENCODE_URL": "http://127.0.0.1:4096",
        "SIDECAR_OPENCODE_CONFIG": str(tmp_path / "shared" / "opencode.json"),
        "SIDECAR_STATE_DIR": str(tmp_path / "state"),
    })
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "run"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("opencode-sidecar: SIDECAR_GATEWAY_TOKEN: is required in attach mode with key custody")
    assert not (tmp_path / "shared").exists()
