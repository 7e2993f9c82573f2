"""Run a real LiteLLM proxy for integration tests.

Plain synchronous code, meant for session-scoped pytest fixtures::

    upstream = fake_upstream.start_in_thread(delay=0.5, chunks=10)
    proxy = start_proxy(tmp_dir, [mock_model("mock-a"), slow_model(upstream.base_url)])
    ...
    proxy = restart_proxy(proxy, [*models, mock_model("mock-b")])  # same port
    ...
    stop_proxy(proxy)

Start-up costs 8 to 9 s on an idle machine (over 20 s on a busy one), nearly all of it
importing ``litellm.proxy``; no flag or variable that exists makes it faster, so start it
once per test session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

MASTER_KEY = "sk-sidecar-test-master-key"

# Offline, quiet and hermetic: no attempt to download the model cost map, no
# .env read from the working directory (LITELLM_MODE=DEV loads one), no feedback banner,
# and no database even if the developer's shell has one configured.
PROXY_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "LITELLM_LOG": "ERROR",
    "NO_PROXY": "127.0.0.1,localhost",
    # /v1/messages to an OpenAI-routed model goes to the upstream's chat completions (which the
    # fake upstream serves) rather than to its Responses API.
    "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true",
}
PROXY_ENV_REMOVED = ("DATABASE_URL", "DIRECT_URL", "DATABASE_URL_READ_REPLICA", "REDIS_URL", "REDIS_HOST")

# Loopback requests must not go through an HTTP proxy configured in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mock_model(name: str, response: str = "mock answer", **model_info: Any) -> dict:
    """A model that answers every chat completion with ``response`` (streaming too)."""
    return model_entry(name, {"model": f"openai/{name}", "mock_response": response}, model_info)


def slow_model(upstream_base_url: str, name: str = "slow", **model_info: Any) -> dict:
    """The model served by ``fake_upstream`` at ``upstream_base_url`` (``http://127.0.0.1:P/v1``)."""
    return model_entry(name, {"model": "openai/slow", "api_base": upstream_base_url, "api_key": "x"}, model_info)


def model_entry(name: str, litellm_params: dict, model_info: dict | None = None) -> dict:
    """One ``model_list`` entry; ``model_info`` keys such as ``mode``, ``max_input_tokens``
    and ``max_output_tokens`` show up in ``GET /v1/models``."""
    entry: dict[str, Any] = {"model_name": name, "litellm_params": dict(litellm_params)}
    if model_info:
        entry["model_info"] = dict(model_info)
    return entry


def write_config(
    path: Path, models: Sequence[dict], master_key: str = MASTER_KEY, general_settings: dict | None = None
) -> Path:
    """Write a LiteLLM config. JSON is valid YAML, so no YAML library is needed."""
    config = {"model_list": list(models), "general_settings": {"master_key": master_key, **(general_settings or {})}}
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def litellm_executable() -> str:
    return str(Path(sys.executable).with_name("litellm"))


@dataclass
class LiteLLMProxy:
    workdir: Path
    config_path: Path
    port: int
    master_key: str
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI-compatible client (and opencode's ``baseURL``) wants."""
        return f"{self.url}/v1"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_proxy(
    workdir: Path,
    models: Sequence[dict],
    *,
    master_key: str = MASTER_KEY,
    port: int | None = None,
    timeout: float = 90.0,
    general_settings: dict | None = None,
) -> LiteLLMProxy:
    """Write ``workdir/litellm.yaml``, start the proxy on ``port`` (a free one by default) in
    its own process group, and return once ``/health/liveliness`` answers 200."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(workdir / "litellm.yaml", models, master_key, general_settings)
    port = port or free_port()
    log_path = workdir / f"litellm-{port}.log"
    env = {**os.environ, **PROXY_ENV}
    for name in PROXY_ENV_REMOVED:
        env.pop(name, None)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [litellm_executable(), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proxy = LiteLLMProxy(workdir, config_path, port, master_key, process, log_path)
    try:
        wait_until_ready(proxy, timeout)
    except BaseException:
        stop_proxy(proxy)
        raise
    return proxy


def wait_until_ready(proxy: LiteLLMProxy, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(f"litellm exited with {proxy.process.returncode}:\n{proxy.log_tail()}")
        try:
            with _opener.open(f"{proxy.url}/health/liveliness", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"litellm not ready on port {proxy.port} after {timeout} s:\n{proxy.log_tail()}")


def stop_proxy(proxy: LiteLLMProxy, grace: float = 10.0) -> None:
    """SIGTERM to the process group, wait up to ``grace`` seconds, then SIGKILL."""
    process = proxy.process
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Kill whatever is left in the group (workers), even if the leader already exited.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def running_proxy(workdir: Path, models: Sequence[dict], **kwargs: Any) -> Iterator[LiteLLMProxy]:
    proxy = start_proxy(workdir, models, **kwargs)
    try:
        yield proxy
    finally:
        stop_proxy(proxy)


def restart_proxy(
    proxy: LiteLLMProxy, models: Sequence[dict], *, timeout: float = 90.0, general_settings: dict | None = None
) -> LiteLLMProxy:
    """Stop the proxy and start it again on the same port with a new model list (same
    workdir and master key), as when an operator restarts the gateway with a new config.

    Updates ``proxy`` in place (and returns it), so fixtures holding it stop the new process.
    """
    stop_proxy(proxy)
    fresh = start_proxy(
        proxy.workdir,
        models,
        master_key=proxy.master_key,
        port=proxy.port,
        timeout=timeout,
        general_settings=general_settings,
    )
    proxy.process, proxy.config_path, proxy.log_path = fresh.process, fresh.config_path, fresh.log_path
    return proxy


def get_models(proxy: LiteLLMProxy) -> dict:
    """``GET /v1/models`` with the master key."""
    request = urllib.request.Request(
        f"{proxy.base_url}/models", headers={"Authorization": f"Bearer {proxy.master_key}"}
    )
    with _opener.open(request, timeout=10) as response:
        return json.load(response)
