"""Real servers shared by the integration and security tests (a pytest plugin, so that each starts
once per session): a slow fake upstream, a LiteLLM proxy, a sidecar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import fake_upstream, secrets_audit
from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess, start_sidecar

# A model whose answer streams for several seconds: long enough to change the list under it.
SLOW_CHUNKS = 45
SLOW_DELAY = 1.0


@pytest.fixture(scope="session", autouse=True)
def command_line_sampler() -> Iterator[secrets_audit.CommandLineSampler]:
    """Every command line seen while the suite runs (integration and security tests start sidecars),
    for tests/integration/test_zz_secrets.py."""
    sampler = secrets_audit.CommandLineSampler()
    sampler.start()
    yield sampler
    sampler.stop()


@pytest.fixture(scope="session")
def upstream() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=SLOW_DELAY, chunks=SLOW_CHUNKS)
    yield server
    server.shutdown()
    server.server_close()


def standard_models(upstream_url: str) -> list[dict]:
    return [
        lp.mock_model("claude-sonnet-4-5", max_input_tokens=200000, max_output_tokens=64000),
        lp.mock_model("claude-haiku-4-5"),
        lp.mock_model("openai/gpt-4o-mini"),
        lp.slow_model(upstream_url),
        lp.mock_model("text-embedding-3-small", mode="embedding"),
        lp.mock_model("{env:SIDECAR_GATEWAY_API_KEY}"),
        lp.mock_model("{file:/etc/hostname}"),
    ]


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: fake_upstream.FakeUpstream) -> Iterator[lp.LiteLLMProxy]:
    proxy = lp.start_proxy(tmp_path_factory.mktemp("gateway"), standard_models(upstream.base_url))
    yield proxy
    lp.stop_proxy(proxy)


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., lp.LiteLLMProxy]]:
    """A LiteLLM proxy of the test's own, for tests that change or stop it."""
    started: list[lp.LiteLLMProxy] = []

    def make(models: list[dict]) -> lp.LiteLLMProxy:
        proxy = lp.start_proxy(tmp_path / f"gateway-{len(started)}", models)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        lp.stop_proxy(proxy)


@pytest.fixture
def make_sidecar(tmp_path: Path) -> Iterator[Callable[..., SidecarProcess]]:
    started: list[SidecarProcess] = []

    def make(
        gateway_url: str | None,
        gateway_key: str | None = lp.MASTER_KEY,
        *,
        workdir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
        **settings: str | None,
    ) -> SidecarProcess:
        workdir = workdir or tmp_path / f"sidecar-{len(started)}"
        sidecar = start_sidecar(workdir, gateway_url, gateway_key, wait=False, extra_env=extra_env, **settings)
        started.append(sidecar)
        if wait:
            sidecar.wait_ready()
        return sidecar

    yield make
    for sidecar in started:
        sidecar.stop()


@pytest.fixture(scope="module")
def shared_sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: lp.LiteLLMProxy) -> Iterator[SidecarProcess]:
    """One sidecar for the tests that only look."""
    sidecar = start_sidecar(tmp_path_factory.mktemp("sidecar"), gateway.url, gateway.master_key)
    yield sidecar
    sidecar.stop()
