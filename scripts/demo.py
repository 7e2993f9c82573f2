"""The demo: a real LiteLLM proxy with mock models, and the sidecar running opencode under it.

It shows the problem being solved: a model added to the gateway becomes usable in the running
opencode after one poll, with no list kept anywhere and nothing restarted. `--check` runs the
same steps and exits, so the test suite can prove the README's demo command works.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import litellm_proxy as lp  # noqa: E402  (the same gateway the tests use)
from tests.support.opencode_api import answer_text, create_session, prompt  # noqa: E402

MODELS = [
    lp.mock_model("claude-sonnet-4-5", "Hello from the gateway's claude-sonnet-4-5 (a mock).",
                  max_input_tokens=200000, max_output_tokens=64000),
    lp.mock_model("claude-haiku-4-5", "Hello from claude-haiku-4-5 (a mock)."),
    lp.mock_model("text-embedding-3-small", mode="embedding"),
]
ADDED = lp.mock_model("gpt-5.5", "Hello from gpt-5.5, added to the gateway a moment ago (a mock).")


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return lp.free_port()


def say(text: str = "") -> None:
    print(text, flush=True)


def listed(api: str, model_id: str) -> bool:
    return httpx.get(f"{api}/v1/models/{model_id}", timeout=5).status_code == 200


def ready(api: str) -> bool:
    return httpx.get(f"{api}/readyz", timeout=5).status_code == 200


def wait_ready(url: str, sidecar: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sidecar.poll() is not None:
            raise SystemExit(f"demo: the sidecar exited with {sidecar.returncode}; see its log")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("demo: the sidecar did not become ready in time; see its log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="run the demo's steps, then stop")
    parser.add_argument("--state", type=Path, default=ROOT / ".state" / "demo")
    args = parser.parse_args()

    state = args.state.resolve()
    (state / "project").mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    # A curl config file, so that trying opencode's API never puts the password in a process listing.
    curl_config = state / "opencode.curlrc"
    curl_config.touch(mode=0o600)
    curl_config.chmod(0o600)
    curl_config.write_text(f'user = "opencode:{password}"\n')
    api_port, opencode_port = port_or_free(4097), port_or_free(4096)
    api, opencode_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{opencode_port}"

    say("Starting a LiteLLM proxy with mock models (takes 10 to 20 s) ...")
    gateway = lp.start_proxy(state / "litellm", MODELS)
    sidecar: subprocess.Popen | None = None
    log_path = state / "sidecar.log"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env.update({
            "SIDECAR_GATEWAY_URL": gateway.url,
            "SIDECAR_GATEWAY_API_KEY": gateway.master_key,
            "SIDECAR_LISTEN": f"127.0.0.1:{api_port}",
            "SIDECAR_OPENCODE_PORT": str(opencode_port),
            "SIDECAR_OPENCODE_PASSWORD": password,
            "SIDECAR_OPENCODE_BIN": str(ROOT / "tools" / "opencode" / "node_modules" / ".bin" / "opencode"),
            "SIDECAR_OPENCODE_DIRECTORY": str(state / "project"),
            "SIDECAR_STATE_DIR": str(state / "sidecar"),
            "SIDECAR_POLL_INTERVAL": "2",
            "SIDECAR_DEFAULT_MODEL": "claude-sonnet-4-5",
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
        })
        say("Starting the sidecar, which starts opencode ...")
        with log_path.open("ab") as log:
            sidecar = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_ready(api, sidecar)
        ids = [m["id"] for m in httpx.get(f"{api}/v1/models").json()["data"]]
        say(f"Ready. The gateway's chat models, now in opencode: {', '.join(ids)}")

        directory = str(state / "project")
        with httpx.Client(base_url=opencode_url, auth=("opencode", password), timeout=60) as client:
            session = create_session(client, directory)
            failed = prompt(client, session, directory, "litellm/gpt-5.5")
            say(f"A prompt with litellm/gpt-5.5 fails (HTTP {failed.status_code}): the gateway doesn't serve it yet.")
            say("Adding gpt-5.5 to the gateway's config and restarting the gateway ...")
            lp.restart_proxy(gateway, [*MODELS, ADDED])
            deadline = time.monotonic() + 60
            while not (listed(api, "gpt-5.5") and ready(api)):
                if time.monotonic() > deadline:
                    raise SystemExit("demo: gpt-5.5 was not applied in time; see the sidecar's log")
                time.sleep(0.5)
            reply = answer_text(prompt(client, session, directory, "litellm/gpt-5.5"))
            say(f"After one poll, the same prompt on the same opencode answers: {reply!r}")

        opencode_bin = ROOT / "tools" / "opencode" / "node_modules" / ".bin" / "opencode"
        say()
        say("Use it from opencode's own client, attached to the sidecar (no key: it listens on loopback only;")
        say("with SIDECAR_API_KEY set, give the key as OPENCODE_SERVER_PASSWORD or --password):")
        binary, project = shlex.quote(str(opencode_bin)), shlex.quote(directory)
        say(f"  {binary} attach {api} --dir {project}")
        say(f"  {binary} run --attach {api} --dir {project} --model gpt-5.5 'say hi'")
        say()
        say("Try it:")
        say(f"  curl {api}/v1/models                  # the catalog, Anthropic Models API shape")
        say(f"  curl {api}/v1/models/claude-sonnet-4-5")
        say(f"  curl {api}/readyz")
        say(f"  opencode's own API: {opencode_url}  (user 'opencode', password in {curl_config})")
        say(f"    curl -K {curl_config} '{opencode_url}/session?directory={directory}'")
        say(f"  gateway (LiteLLM): {gateway.url}  key {gateway.master_key} (a demo key)")
        say(f"  the sidecar's log: {log_path}; the config it writes: {state / 'sidecar' / 'opencode.json'}")
        if args.check:
            return 0
        say("Ctrl-C stops the demo.")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        if sidecar is not None and sidecar.poll() is None:
            sidecar.send_signal(signal.SIGTERM)
            try:
                sidecar.wait(30)
            except subprocess.TimeoutExpired:
                sidecar.kill()
                sidecar.wait()
        lp.stop_proxy(gateway)
        say("Stopped.")


if __name__ == "__main__":
    sys.exit(main())
