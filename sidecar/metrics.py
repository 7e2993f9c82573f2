"""`GET /metrics`: Prometheus text, read at scrape time from the parts that own each number."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from importlib import metadata
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "opencode_sidecar"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def version() -> str:
    try:
        return metadata.version("opencode-sidecar")
    except metadata.PackageNotFoundError:
        return "unknown"


# What a scrape reads, and nothing more: the collector is handed the parts that keep the numbers,
# typed by what it reads, so it imports none of them, nor the supervisor that owns them.


class GatewayTimes(Protocol):
    @property
    def last_success(self) -> float | None: ...  # unix time of the last good poll in this run
    @property
    def catalog_time(self) -> float | None: ...  # unix time the catalog was listed


class SyncCounts(Protocol):
    """The reconciler's numbers."""

    @property
    def polls(self) -> Mapping[tuple[str, str], int]: ...  # by (gateway, outcome)
    @property
    def writes(self) -> Mapping[str, int]: ...  # by result
    @property
    def gateways(self) -> Mapping[str, GatewayTimes]: ...
    def provider_catalog(self, provider_id: str) -> Sized: ...


class ApplyCounts(Protocol):
    """The applier's numbers."""

    @property
    def reloads(self) -> Mapping[str, int]: ...  # by result
    @property
    def prompts_aborted_by_reload(self) -> int: ...
    @property
    def applied(self) -> bool: ...


class OpencodeCounts(Protocol):
    """The opencode child's (or the attached opencode's) numbers."""

    @property
    def restarts(self) -> int: ...
    @property
    def healthy(self) -> bool: ...


class ModelCounts(Protocol):
    """One (gateway, model)'s traffic through the gateway route."""

    @property
    def requests(self) -> Mapping[str, int]: ...  # by status label
    @property
    def first_byte(self) -> Sequence[int]: ...  # answers per bucket, not cumulative, the last +Inf
    @property
    def first_byte_sum(self) -> float: ...
    @property
    def streamed_bytes(self) -> int: ...


class TrafficCounts(Protocol):
    """The gateway route's records (sidecar.traffic.ModelTraffic)."""

    def series(self) -> Iterable[tuple[str, str, ModelCounts]]: ...  # (gateway, model, numbers)


class SidecarCollector(Collector):
    """Counters the reconciler, the applier and the child keep as plain numbers, and gauges of
    their state, turned into metric families on each scrape: no second bookkeeping to drift."""

    def __init__(
        self,
        reconciler: SyncCounts,
        applier: ApplyCounts,
        child: OpencodeCounts,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reconciler, self._applier, self._child = reconciler, applier, child
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        reconciler, applier, child = self._reconciler, self._applier, self._child

        build = GaugeMetricFamily(f"{PREFIX}_build_info", "Version of the sidecar", labels=["version"])
        build.add_metric([version()], 1)
        yield build

        polls = CounterMetricFamily(
            f"{PREFIX}_gateway_polls", "Polls of each gateway's model list, by outcome", labels=["gateway", "outcome"]
        )
        for (gateway, outcome), count in sorted(reconciler.polls.items()):
            polls.add_metric([gateway, outcome], count)
        yield polls

        models = GaugeMetricFamily(f"{PREFIX}_catalog_models", "Models each gateway's provider holds", labels=["gateway"])
        success = GaugeMetricFamily(
            f"{PREFIX}_gateway_last_success_timestamp_seconds",
            "Unix time of each gateway's last good poll in this run",
            labels=["gateway"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_catalog_age_seconds", "Age of each gateway's catalog (saved lists count from their file)",
            labels=["gateway"],
        )
        now = self._clock()
        for gateway, state in reconciler.gateways.items():
            models.add_metric([gateway], len(reconciler.provider_catalog(gateway)))
            if state.last_success is not None:
                success.add_metric([gateway], state.last_success)
            if state.catalog_time is not None:
                age.add_metric([gateway], max(0.0, now - state.catalog_time))
        yield models
        yield success
        yield age

        writes = CounterMetricFamily(
            f"{PREFIX}_config_writes", "Writes of opencode's config file, by result", labels=["result"]
        )
        for result in ("written", "failed"):
            writes.add_metric([result], reconciler.writes.get(result, 0))
        yield writes

        reloads = CounterMetricFamily(
            f"{PREFIX}_reloads", "Reloads of opencode directories, by result", labels=["result"]
        )
        for result in ("reloaded", "deferred", "failed", "restarted"):
            reloads.add_metric([result], applier.reloads.get(result, 0))
        yield reloads

        aborted = CounterMetricFamily(
            f"{PREFIX}_prompts_aborted_by_reload", "Prompts aborted within seconds of a reload of their directory (should stay 0)"
        )
        aborted.add_metric([], applier.prompts_aborted_by_reload)
        yield aborted

        restarts = CounterMetricFamily(f"{PREFIX}_opencode_restarts", "Restarts of opencode after a crash or a hang")
        restarts.add_metric([], child.restarts)
        yield restarts

        up = GaugeMetricFamily(f"{PREFIX}_opencode_up", "1 while opencode answers its health check")
        up.add_metric([], 1 if child.healthy else 0)
        yield up

        applied = GaugeMetricFamily(f"{PREFIX}_config_applied", "1 while opencode holds the config last written")
        applied.add_metric([], 1 if applier.applied else 0)
        yield applied


class TrafficCollector(Collector):
    """The model requests the sidecar forwarded to each gateway, read from the records at scrape time."""

    def __init__(self, traffic: TrafficCounts, buckets: Sequence[float]) -> None:
        self._traffic = traffic
        self._bounds = [*(str(float(bound)) for bound in buckets), "+Inf"]

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            f"{PREFIX}_model_requests",
            "Model requests forwarded to each gateway, by the gateway's status (none: no answer)",
            labels=["gateway", "model", "status"],
        )
        first_byte = HistogramMetricFamily(
            f"{PREFIX}_model_first_byte_seconds",
            "Time from sending a model request to the gateway to the first byte of its answer",
            labels=["gateway", "model"],
        )
        streamed = CounterMetricFamily(
            f"{PREFIX}_model_streamed_bytes", "Bytes of the gateways' answers passed back",
            labels=["gateway", "model"],
        )
        for gateway, model, numbers in self._traffic.series():
            for status, count in sorted(numbers.requests.items()):
                requests.add_metric([gateway, model, status], count)
            cumulative, total = [], 0
            for bound, count in zip(self._bounds, numbers.first_byte, strict=True):
                total += count
                cumulative.append((bound, total))
            first_byte.add_metric([gateway, model], cumulative, numbers.first_byte_sum)
            streamed.add_metric([gateway, model], numbers.streamed_bytes)
        yield requests
        yield first_byte
        yield streamed


class FailingMarks(Protocol):
    """Listed models the gateway refuses (sidecar.failing.FailingModels), as (gateway, model, kind)."""

    def failing_series(self) -> Iterable[tuple[str, str, str]]: ...


class FailingCollector(Collector):
    def __init__(self, failing: FailingMarks) -> None:
        self._failing = failing

    def collect(self) -> Iterator[Metric]:
        # Only marked models have a series: as many as the marks, which are bounded.
        gauge = GaugeMetricFamily(
            f"{PREFIX}_model_failing",
            "1 while a listed model is marked failing: its gateway refused it (kind: not_found, not_allowed, unavailable)",
            labels=["gateway", "model", "kind"],
        )
        for gateway, model, kind in self._failing.failing_series():
            gauge.add_metric([gateway, model, kind], 1)
        yield gauge


class ServedFeeds(Protocol):
    """What `/v1/catalogs` serves (sidecar.served.ServedCatalogs): per gateway, the long-polls held
    now and the versions served so far."""

    def series(self) -> Iterable[tuple[str, int, int]]: ...  # (gateway, held, versions)


class CatalogsCollector(Collector):
    """A hub's followers: how many wait on each gateway's list now, and how often it changed."""

    def __init__(self, served: ServedFeeds) -> None:
        self._served = served

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            f"{PREFIX}_catalog_long_polls", "GET /v1/catalogs/{gateway} long-polls held now", labels=["gateway"]
        )
        versions = CounterMetricFamily(
            f"{PREFIX}_catalog_versions", "Versions of each gateway's list served at /v1/catalogs", labels=["gateway"]
        )
        for gateway, waiting, count in self._served.series():
            held.add_metric([gateway], waiting)
            versions.add_metric([gateway], count)
        yield held
        yield versions


class Metrics:
    """The sidecar's registry: its own, not the process-wide default, so tests can make many."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.resolve_seconds = Histogram(
            f"{PREFIX}_resolve_duration_seconds",
            "Time to resolve a requested model until opencode can use it, by outcome",
            labelnames=["outcome"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )

    def watch(self, reconciler: SyncCounts, applier: ApplyCounts, child: OpencodeCounts) -> None:
        self.registry.register(SidecarCollector(reconciler, applier, child))

    def watch_traffic(self, traffic: TrafficCounts, buckets: Sequence[float]) -> None:
        self.registry.register(TrafficCollector(traffic, buckets))

    def watch_failing(self, failing: FailingMarks) -> None:
        self.registry.register(FailingCollector(failing))

    def watch_catalogs(self, served: ServedFeeds) -> None:
        self.registry.register(CatalogsCollector(served))

    def observe_resolve(self, seconds: float, outcome: str) -> None:
        self.resolve_seconds.labels(outcome=outcome).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
