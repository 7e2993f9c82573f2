"""The collector reads plain numbers from whatever keeps them: fakes stand in for the reconciler,
the applier and the child, and the clock is stepped, not read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics import SidecarCollector


@dataclass
class Times:
    last_success: float | None = None
    catalog_time: float | None = None


@dataclass
class Sync:
    polls: Counter[tuple[str, str]] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    gateways: dict[str, Times] = field(default_factory=dict)
    catalogs: dict[str, list[str]] = field(default_factory=dict)

    def provider_catalog(self, provider_id: str) -> list[str]:
        return self.catalogs[provider_id]


@dataclass
class Apply:
    reloads: Counter[str] = field(default_factory=Counter)
    prompts_aborted_by_reload: int = 0
    applied: bool = False


@dataclass
class Opencode:
    restarts: int = 0
    healthy: bool = False


def scrape(collector: SidecarCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_a_scrape_reads_the_numbers_as_they_are_now() -> None:
    sync = Sync(
        polls=Counter({("gw", "changed"): 2, ("gw", "failed"): 1}),
        writes=Counter({"written": 3}),
        gateways={"gw": Times(last_success=1000.0, catalog_time=990.0), "new": Times()},
        catalogs={"gw": ["a", "b"], "new": []},
    )
    apply, child = Apply(reloads=Counter({"reloaded": 4}), applied=True), Opencode(restarts=1, healthy=True)
    now = [1030.0]
    collector = SidecarCollector(sync, apply, child, clock=lambda: now[0])
    samples = scrape(collector)
    assert samples["opencode_sidecar_gateway_polls_total", (("gateway", "gw"), ("outcome", "changed"))] == 2
    assert samples["opencode_sidecar_catalog_models", (("gateway", "gw"),)] == 2
    assert samples["opencode_sidecar_catalog_models", (("gateway", "new"),)] == 0
    assert samples["opencode_sidecar_gateway_last_success_timestamp_seconds", (("gateway", "gw"),)] == 1000.0
    assert ("opencode_sidecar_gateway_last_success_timestamp_seconds", (("gateway", "new"),)) not in samples
    assert samples["opencode_sidecar_catalog_age_seconds", (("gateway", "gw"),)] == 40.0
    # Results that never happened are still there, at 0, for rate() to start from.
    assert samples["opencode_sidecar_config_writes_total", (("result", "failed"),)] == 0
    assert samples["opencode_sidecar_reloads_total", (("result", "reloaded"),)] == 4
    assert samples["opencode_sidecar_reloads_total", (("result", "restarted"),)] == 0
    assert samples["opencode_sidecar_opencode_restarts_total", ()] == 1
    assert samples["opencode_sidecar_opencode_up", ()] == 1
    assert samples["opencode_sidecar_config_applied", ()] == 1

    child.healthy, apply.applied, now[0] = False, False, 1090.0
    sync.polls["gw", "changed"] += 1
    samples = scrape(collector)
    assert samples["opencode_sidecar_gateway_polls_total", (("gateway", "gw"), ("outcome", "changed"))] == 3
    assert samples["opencode_sidecar_catalog_age_seconds", (("gateway", "gw"),)] == 100.0
    assert samples["opencode_sidecar_opencode_up", ()] == 0
    assert samples["opencode_sidecar_config_applied", ()] == 0
