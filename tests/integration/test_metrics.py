"""`GET /metrics` of a real sidecar, scraped the way Prometheus does, after a list change and a resolve."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import fake_upstream
from tests.support.fake_upstream import model_list
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

API_KEY = "sk-sidecar-api-key-0123456789abcdef0123"


@pytest.fixture
def fake_gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=model_list(["m1", "m2"]))
    yield server
    server.shutdown()
    server.server_close()


def scrape(sidecar: SidecarProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{sidecar.api_url}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_follow_polls_writes_reloads_and_resolves(
    fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # With an API key: the probes and /metrics stay open to the kubelet and Prometheus.
    # `brand-new` is listed nowhere: registered blind, as before SIDECAR_UNLISTED_MODELS (issue 17).
    sidecar = make_sidecar(
        f"http://127.0.0.1:{fake_gateway.port}", "sk-metrics-test-key", api_key=API_KEY, unlisted_models="register"
    )
    fake_gateway.models = model_list(["m1", "m2", "m3"])
    sidecar.wait_for(lambda: scrape(sidecar).get(("opencode_sidecar_catalog_models", (("gateway", "litellm"),))) == 3,
                     30, "three models in the metrics")
    resolved = httpx.post(
        f"{sidecar.api_url}/v1/models/resolve", json={"model": "brand-new"}, headers={"x-api-key": API_KEY},
        timeout=60,
    )
    assert resolved.status_code == 200
    sidecar.wait_ready()
    # Counters that the next polls and reloads bring: waited for, not assumed already there (a
    # busy machine may not have polled the unchanged list yet when the resolve answers).
    unchanged = ("opencode_sidecar_gateway_polls_total", (("gateway", "litellm"), ("outcome", "unchanged")))
    reloaded = ("opencode_sidecar_reloads_total", (("result", "reloaded"),))
    sidecar.wait_for(lambda: scrape(sidecar).get(unchanged, 0) >= 1 and scrape(sidecar).get(reloaded, 0) >= 2,
                     30, "an unchanged poll and two reloads in the metrics")
    samples = scrape(sidecar)
    assert samples["opencode_sidecar_build_info", (("version", "0.1.0"),)] == 1
    assert samples["opencode_sidecar_gateway_polls_total", (("gateway", "litellm"), ("outcome", "changed"))] >= 2
    assert samples["opencode_sidecar_gateway_polls_total", (("gateway", "litellm"), ("outcome", "unchanged"))] >= 1
    assert samples["opencode_sidecar_catalog_models", (("gateway", "litellm"),)] == 4  # with the registered one
    assert samples["opencode_sidecar_config_writes_total", (("result", "written"),)] >= 3
    assert samples["opencode_sidecar_config_writes_total", (("result", "failed"),)] == 0
    assert samples["opencode_sidecar_reloads_total", (("result", "reloaded"),)] >= 2
    assert samples["opencode_sidecar_prompts_aborted_by_reload_total", ()] == 0
    assert samples["opencode_sidecar_opencode_restarts_total", ()] == 0
    assert samples["opencode_sidecar_opencode_up", ()] == 1
    assert samples["opencode_sidecar_config_applied", ()] == 1
    assert samples["opencode_sidecar_resolve_duration_seconds_count", (("outcome", "ok"),)] == 1
    assert samples["opencode_sidecar_gateway_last_success_timestamp_seconds", (("gateway", "litellm"),)] > 1.7e9
