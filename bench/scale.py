"""4. Scale: synthetic catalogs of 10, 1,000 and 10,000 models.

The gateway is tests/support/fake_upstream serving an OpenAI-shaped list of N models (it also
answers chat completions for any model, so prompts work; SIDECAR_MAX_MODELS is raised out of the
way for these rows; it encodes each list once, so its own JSON encoding is not in the fetch). A
poll's own steps are timed in this process by calling the sidecar's functions, each as its poll
runs them, for a list that changed by one model since the last poll: fetch (GatewayClient: HTTP
GET, parse, build the Catalog with its fingerprint), diff (compare with the previous list:
`same_models` and the added/removed sets), render (`render_config` and `dump_config`) and write
(the new catalog's saved text and opencode.json, each `write_atomically` with fsyncs; the same
writes without fsync beside it). Their sum is issue 19's target at 10,000 models; a poll that finds
the same list is timed too (the gateway still asked, nothing parsed). opencode's own reload is
timed against a real sidecar supervising the real opencode: one model is added to the gateway,
and the time runs from the sidecar's `opencode.config_written` to its `opencode.applied` (the
directory disposed, then `GET /config/providers` listing exactly the rendered models). Memory
is VmRSS of the sidecar and of opencode after that change. Prompt latency is a
blocking prompt through opencode to a model of the synthetic provider (after a first, cold one).

The largest catalog that keeps opencode healthy (issue 13) is searched for, not guessed: one sidecar
(with no cap and a health check that never gives up, so that nothing is killed while it is
measured) is given catalogs of doubling size, then sizes between the last healthy one and the
first unhealthy one. Through each reload, this process asks opencode's `GET /global/health` every
0.2 s (the sidecar's own check gives up after 2 s) and times each answer; a size is healthy when no
answer took more than half of those 2 s. Memory at SIDECAR_MAX_MODELS is the sidecar's VmRSS and
VmHWM (its peak) with its default cap and a gateway listing 100,001 models, against the 256 MiB
limit of deploy/kubernetes/base.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

from bench.common import Context, Row, benchmark
from bench.servers import rss_mib
from sidecar.catalog import Catalog
from sidecar.opencode.config import dump_config, render_config, write_atomically
from sidecar.settings import Settings, load_settings
from sidecar.supervisor import gateway_clients
from tests.support import fake_upstream, opencode_api
from tests.support.sidecar_process import SidecarProcess, start_sidecar

CREATED = fake_upstream.CREATED

HEALTH_TIMEOUT = 2.0  # the sidecar's own health check of opencode gives up after this (OpencodeClient.healthy)
# Healthy: every answer within half of that, a margin for a slower machine or a busier opencode.
HEALTHY_LATENCY = HEALTH_TIMEOUT / 2
PROBE_INTERVAL = 0.2
HUGE_LIST = 100_001  # the gateway of issue 13
# Issue 19's targets at 10,000 models: a change's fetch, diff, render and write, and the sidecar's memory.
TARGET_MODELS = 10_000
CHANGE_TARGET_MS = 100
RSS_TARGET_MIB = 80
K8S_LIMIT_MIB = 256  # the sidecar container's memory limit in deploy/kubernetes/base
DEFAULT_MAX_MODELS = Settings.model_fields["max_models"].default
# What these rows measure is the whole list: SIDECAR_MAX_MODELS out of the way.
NO_CAP = 1_000_000


def synthetic_list(count: int, extra: int = 0) -> dict:
    """An OpenAI-shaped list of `count` models (plus `extra` added ones, to make a change)."""
    ids = [f"bench-model-{i:05d}" for i in range(count)] + [f"bench-added-{i:03d}" for i in range(extra)]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": CREATED, "owned_by": "bench"} for i in ids]}


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def _timed(step: Callable[[], Awaitable[object]], reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
    return samples


def split_poll(upstream: fake_upstream.FakeUpstream, reps: int, scratch: Path) -> dict[str, float]:
    """Median milliseconds of each step of one poll that finds a one-model change, and of a poll
    that finds the same list."""
    settings = load_settings(
        gateway_url=f"http://127.0.0.1:{upstream.port}", gateway_format="openai", gateway_api_key="bench", state_dir=scratch,
        max_models=NO_CAP,
    )
    gateway = settings.gateways[0]
    count = len(upstream.models["data"])
    lists = [synthetic_list(count), synthetic_list(count, extra=1)]  # each encoded once by the upstream

    async def measure() -> dict[str, float]:
        client = gateway_clients(settings)[gateway.id]
        changes = iter(range(1, 2 * reps + 2))

        async def fetch_changed() -> None:
            # Every poll finds the list the other way round: one model more, then one fewer.
            upstream.models = lists[next(changes) % 2]
            await client.fetch_catalog()

        try:
            upstream.models = lists[0]
            catalog = await client.fetch_catalog()
            unchanged = await _timed(client.fetch_catalog, reps)
            fetch = await _timed(fetch_changed, reps)
        finally:
            await client.aclose()
            upstream.models = lists[0]
        previous = Catalog(list(catalog)[1:])  # the list before the change: one model fewer
        models = list(catalog)

        async def build() -> None:
            Catalog(models)

        async def diff() -> None:
            # What poll_once does with a fresh list.
            if not catalog.same_models(previous):
                len(set(catalog.ids) - set(previous.ids)), len(set(previous.ids) - set(catalog.ids))

        async def render() -> None:
            dump_config(render_config({gateway.id: catalog}, settings, {}))

        text = dump_config(render_config({gateway.id: catalog}, settings, {})) + "\n"
        # A new list is a new catalog, whose saved text is made once, at its first write.
        fresh = [Catalog(models) for _ in range(2 * reps)]

        async def write() -> None:
            write_atomically(scratch / f"catalog-{gateway.id}.json", fresh.pop().to_json())
            write_atomically(scratch / "opencode.json", text)

        async def write_unsynced() -> None:
            # The same, without the fsyncs: what they cost is the difference.
            for name, content in ((f"catalog-{gateway.id}.json", fresh.pop().to_json()), ("opencode.json", text)):
                (scratch / f"{name}.tmp").write_text(content, encoding="utf-8")
                os.replace(scratch / f"{name}.tmp", scratch / name)

        steps = {
            "fetch_ms": _median_ms(fetch),
            "catalog_ms": _median_ms(await _timed(build, reps)),
            "diff_ms": _median_ms(await _timed(diff, reps)),
            "render_ms": _median_ms(await _timed(render, reps)),
            "write_ms": _median_ms(await _timed(write, reps)),
            "write_unsynced_ms": _median_ms(await _timed(write_unsynced, reps)),
            "unchanged_poll_ms": _median_ms(unchanged),
            "config_kb": round(len(text.encode()) / 1024, 1),
        }
        steps["change_ms"] = round(sum(steps[f"{name}_ms"] for name in ("fetch", "diff", "render", "write")), 1)
        return steps

    return anyio.run(measure)


def _timestamp(event: dict) -> float:
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def measure_reload(sidecar: SidecarProcess, upstream: fake_upstream.FakeUpstream, count: int, reps: int) -> dict[str, float]:
    """Add a model `reps` times; opencode's reload (config written to applied) and the whole
    sidecar side (list changed to applied), as the sidecar's own log times them."""
    reloads, wholes = [], []
    for rep in range(1, reps + 1):
        applied_before = len(sidecar.events("opencode.applied"))
        upstream.models = synthetic_list(count, extra=rep)
        sidecar.wait_for(
            lambda n=applied_before: len(sidecar.events("opencode.applied")) > n, timeout=180, what="opencode.applied"
        )
        applied = _timestamp(sidecar.events("opencode.applied")[-1])
        reloads.append(applied - _timestamp(sidecar.events("opencode.config_written")[-1]))
        wholes.append(applied - _timestamp(sidecar.events("catalog.changed")[-1]))
    return {"reload_ms": _median_ms(reloads), "changed_to_applied_ms": _median_ms(wholes)}


def measure_prompts(sidecar: SidecarProcess, count: int, warm: int) -> dict[str, float]:
    model = "litellm/bench-model-00000"
    directory = str(sidecar.directory)
    samples = []
    with sidecar.opencode(timeout=120) as opencode:
        for _ in range(1 + warm):
            session = opencode_api.create_session(opencode, directory)
            started = time.perf_counter()
            answer = opencode_api.answer_text(opencode_api.prompt(opencode, session, directory, model))
            samples.append(time.perf_counter() - started)
            assert answer, "the prompt got an empty answer"
    return {"first_ms": round(samples[0] * 1000, 1), "median_ms": _median_ms(samples[1:])}


def status_kib(pid: int, field: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for {pid}")


class HealthProbe:
    """Asks opencode's `GET /global/health` every PROBE_INTERVAL s from a thread, timing each answer
    (a generous timeout: the point is how long it takes, not whether it beats 2 s)."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        self._client = sidecar.opencode(timeout=120)
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self._client.get("/global/health")
            except httpx.HTTPError:
                pass  # counted by its time all the same
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(PROBE_INTERVAL)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


def measure_catalog(sidecar: SidecarProcess, upstream: fake_upstream.FakeUpstream, count: int) -> dict[str, float | int | str]:
    """Give opencode `count` models; the reload's time, and opencode's health answers meanwhile."""
    applied_before = len(sidecar.events("opencode.applied"))
    with HealthProbe(sidecar) as probe:
        upstream.models = synthetic_list(count)
        sidecar.wait_for(
            lambda: len(sidecar.events("opencode.applied")) > applied_before, timeout=900, what="opencode.applied"
        )
    applied = _timestamp(sidecar.events("opencode.applied")[-1])
    reload = applied - _timestamp(sidecar.events("opencode.config_written")[-1])
    slowest = max(probe.latencies)
    return {
        "models": count,
        "reload_ms": round(reload * 1000, 1),
        "health_p50_ms": _median_ms(probe.latencies),
        "health_max_ms": round(slowest * 1000, 1),
        "checks_over_2s": sum(1 for latency in probe.latencies if latency > HEALTH_TIMEOUT),
        "healthy": "yes" if slowest <= HEALTHY_LATENCY else "no",
        "opencode_rss_mib": round(rss_mib(sidecar.opencode_pid()), 1),
    }


def search_sizes(ctx: Context) -> tuple[list[int], int]:
    """The doubling sizes to try, and how many halvings between the last healthy and first unhealthy."""
    if ctx.small:
        return [50, 100], 1
    return [2_000 * 2**i for i in range(7)], 3  # 2,000 to 128,000


def largest_healthy(ctx: Context) -> list[Row]:
    sizes, halvings = search_sizes(ctx)
    upstream = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=synthetic_list(10))
    results: dict[int, dict[str, float | int | str]] = {}
    try:
        sidecar = start_sidecar(
            ctx.workdir / "scale-search",
            f"http://127.0.0.1:{upstream.port}",
            "bench",
            log_level="info",
            wait=False,
            # No cap, and nothing killed while it is measured; a shrink applies at once.
            max_models=str(NO_CAP),
            health_failures="1000",
            shrink_confirmations="1",
        )
        try:
            sidecar.wait_ready(timeout=300)
            healthy, unhealthy = 0, 0
            for count in sizes:
                ctx.log(f"scale: is opencode healthy reloading {count:,} models?")
                results[count] = measure_catalog(sidecar, upstream, count)
                if results[count]["healthy"] != "yes":
                    unhealthy = count
                    break
                healthy = count
            for _ in range(halvings if unhealthy and healthy else 0):
                count = int(round((healthy + unhealthy) / 2, -2 if unhealthy - healthy > 200 else 0))
                if count in (healthy, unhealthy):
                    break
                ctx.log(f"scale: is opencode healthy reloading {count:,} models?")
                results[count] = measure_catalog(sidecar, upstream, count)
                if results[count]["healthy"] == "yes":
                    healthy = count
                else:
                    unhealthy = count
            assert not sidecar.events("child.unresponsive"), "opencode was killed while it was measured"
        finally:
            sidecar.stop()
    finally:
        upstream.shutdown()
        upstream.server_close()
    rows = [
        Row("scale", f"health while reloading {count:,} models", figures, note=f"healthy: every answer within {HEALTHY_LATENCY:g} s")
        for count, figures in sorted(results.items())
    ]
    largest = max((count for count, figures in results.items() if figures["healthy"] == "yes"), default=0)
    first_bad = min((count for count, figures in results.items() if figures["healthy"] != "yes"), default=0)
    rows.append(
        Row(
            "scale",
            "largest catalog that keeps opencode healthy",
            {"models": largest, "first_unhealthy": first_bad or "none tried", "max_models_default": DEFAULT_MAX_MODELS},
            target="SIDECAR_MAX_MODELS default at or below it",
            # Small mode's sizes say nothing about the default.
            met=DEFAULT_MAX_MODELS <= largest if largest and not ctx.small else None,
            note="first_unhealthy: the smallest size tried whose reload delayed a health answer past the bound",
        )
    )
    return rows


def memory_at_cap(ctx: Context) -> Row:
    """The sidecar with its default cap and a gateway listing far more: memory, and opencode never killed."""
    listed = 1_001 if ctx.small else HUGE_LIST
    max_models = 50 if ctx.small else DEFAULT_MAX_MODELS
    # Long ids, as a big gateway's are: the list near the 16 MiB bound on what the sidecar reads.
    ids = [f"bench-model-{i:06d}-{'x' * 60}" for i in range(listed)]
    upstream = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=fake_upstream.model_list(ids))
    try:
        sidecar = start_sidecar(
            ctx.workdir / "scale-cap",
            f"http://127.0.0.1:{upstream.port}",
            "bench",
            log_level="debug",  # gateway.unchanged: the polls that read the whole list again
            wait=False,
            max_models=None if not ctx.small else str(max_models),
        )
        try:
            started = time.monotonic()
            sidecar.wait_ready(timeout=300)
            ready = time.monotonic() - started
            with httpx.Client(base_url=sidecar.api_url, timeout=10) as api:
                capped = api.get("/v1/status").json()["gateways"]["litellm"]["capped"]
            # A few more polls of the huge list, each read whole before it is cut.
            polls = len(sidecar.events("gateway.unchanged")) + len(sidecar.events("catalog.changed"))
            sidecar.wait_for(
                lambda: len(sidecar.events("gateway.unchanged")) + len(sidecar.events("catalog.changed")) >= polls + 3,
                timeout=120,
                what="three more polls",
            )
            pid = sidecar.process.pid
            figures: dict[str, float | int | str | None] = {
                "listed": listed,
                "max_models": max_models,
                "kept": capped["kept_models"] if capped else listed,
                "list_mib": round(len(json.dumps(upstream.models).encode()) / 2**20, 1),
                "ready_s": round(ready, 1),
                "sidecar_rss_mib": round(status_kib(pid, "VmRSS"), 1),
                "sidecar_peak_mib": round(status_kib(pid, "VmHWM"), 1),
                "opencode_rss_mib": round(rss_mib(sidecar.opencode_pid()), 1),
                "unresponsive_kills": len(sidecar.events("child.unresponsive")),
            }
        finally:
            sidecar.stop()
    finally:
        upstream.shutdown()
        upstream.server_close()
    return Row(
        "scale",
        f"memory at SIDECAR_MAX_MODELS: {listed:,} listed",
        figures,
        target=f"sidecar peak within the {K8S_LIMIT_MIB} MiB limit of deploy/kubernetes/base",
        met=float(figures["sidecar_peak_mib"] or 0) < K8S_LIMIT_MIB,
        note="peak = VmHWM after startup and three polls of the whole list",
    )


@benchmark("scale")
def run(ctx: Context) -> list[Row]:
    sizes = (10, 100) if ctx.small else (10, 1000, 10000)
    split_reps = {10: 20, 100: 5, 1000: 20, 10000: 5}
    reload_reps = 1 if ctx.small else 3
    warm_prompts = 1 if ctx.small else 3
    prompted = (sizes[0], sizes[-1])
    rows: list[Row] = []
    prompts: dict[int, dict[str, float]] = {}
    for count in sizes:
        upstream = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=synthetic_list(count))
        try:
            ctx.log(f"scale: {count} models, the poll's steps in process")
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as scratch:
                steps = split_poll(upstream, 3 if ctx.small else split_reps[count], Path(scratch))
            ctx.log(f"scale: {count} models, a sidecar and opencode")
            sidecar = start_sidecar(
                ctx.workdir / f"scale-{count}", f"http://127.0.0.1:{upstream.port}", "bench", log_level="info", wait=False,
                max_models=str(NO_CAP),
            )
            try:
                sidecar.wait_ready(timeout=300)
                reload = measure_reload(sidecar, upstream, count, reload_reps)
                memory = {
                    "sidecar_rss_mib": round(rss_mib(sidecar.process.pid), 1),
                    "opencode_rss_mib": round(rss_mib(sidecar.opencode_pid()), 1),
                }
                if count in prompted:
                    ctx.log(f"scale: {count} models, prompts")
                    prompts[count] = measure_prompts(sidecar, count, warm_prompts)
            finally:
                sidecar.stop()
        finally:
            upstream.shutdown()
            upstream.server_close()
        total = steps["change_ms"] + reload["reload_ms"]
        at_target = count == TARGET_MODELS
        rows.append(
            Row(
                "scale",
                f"{count:,} models",
                {"models": count, **steps, **reload, "poll_to_applied_ms": round(total, 1), **memory},
                target=f"fetch+diff+render+write <= {CHANGE_TARGET_MS} ms at {TARGET_MODELS:,} models" if at_target else None,
                met=steps["change_ms"] <= CHANGE_TARGET_MS if at_target else None,
                note="change = fetch + diff + render + write of a list with one model more (catalog_ms is part of "
                "fetch_ms); unchanged_poll: a poll finding the same list; poll_to_applied = change + reload",
            )
        )
        if at_target:
            rows.append(
                Row(
                    "scale",
                    f"sidecar memory at {count:,} models",
                    {"models": count, **memory},
                    target=f"sidecar RSS <= {RSS_TARGET_MIB} MiB at {TARGET_MODELS:,} models",
                    met=memory["sidecar_rss_mib"] <= RSS_TARGET_MIB,
                    note="VmRSS after the reloads, opencode's beside it",
                )
            )
    rows += largest_healthy(ctx)
    rows.append(memory_at_cap(ctx))
    small, large = prompted
    for count in prompted:
        rows.append(
            Row(
                "scale",
                f"prompt through opencode, {count:,} models",
                {"models": count, **prompts[count]},
                peer=f"the same prompt with {small:,} models" if count == large else None,
                ratio=round(prompts[large]["median_ms"] / prompts[small]["median_ms"], 2) if count == large else None,
                note="fake upstream answers at once: the time is opencode's own",
            )
        )
    return rows


def reading(rows: list[Row]) -> str:
    steps = [row for row in rows if "fetch_ms" in row.figures]
    prompts = [row for row in rows if row.case.startswith("prompt")]
    if not steps:
        return ""
    big = max(steps, key=lambda row: int(row.figures["models"] or 0))
    smallest = min(steps, key=lambda row: int(row.figures["models"] or 0))
    f = {key: float(value) for key, value in big.figures.items() if isinstance(value, (int, float))}
    s = {key: float(value) for key, value in smallest.figures.items() if isinstance(value, (int, float))}
    parts = {name: f[f"{name}_ms"] for name in ("fetch", "diff", "render", "write", "reload")}
    ours = f.get("change_ms", parts["fetch"] + parts["diff"] + parts["render"] + parts["write"])
    slowest = max(parts, key=lambda name: parts[name])
    met = "within" if ours <= CHANGE_TARGET_MS else "over"
    text = (
        f"At {int(f['models']):,} models a change of one model costs the sidecar {ours:,.0f} ms, {met} the "
        f"{CHANGE_TARGET_MS} ms target (fetch {parts['fetch']:,.0f}, of which building the catalog "
        f"{f['catalog_ms']:,.0f}; diff {parts['diff']:.2f}; render {parts['render']:,.0f}; write {parts['write']:,.0f}, "
        f"{f.get('write_unsynced_ms', 0):,.0f} of it without the fsyncs) and opencode {parts['reload']:,.0f} ms to "
        f"reload and list them back, so the largest part is "
        f"{'opencode' + chr(39) + 's reload' if slowest == 'reload' else slowest}. A poll that finds the same list "
        f"costs {f.get('unchanged_poll_ms', 0):,.1f} ms: the answer's sha256 matches the last one's and nothing is "
        f"parsed. A changed list is decoded by orjson and only its new or changed entries become records (the others "
        f"keep theirs, found by each entry's text); the config is written by orjson and the saved list by pydantic's "
        f"core, each in one call. What grows with the list is that per-entry lookup, the catalog's sort and "
        f"fingerprint, and the render's dict per model: at {int(s['models']):,} models fetch, render and write take "
        f"{s['fetch_ms']:.1f}, {s['render_ms']:.2f} and {s['write_ms']:.1f} ms. Diff compares fingerprints computed "
        f"while the catalog is built; only a changed list pays for the added and removed sets "
        f"({parts['diff']:.2f} ms here). opencode's reload has a "
        f"floor of about {s['reload_ms']:,.0f} ms even at {int(s['models']):,} models (the directory disposed and "
        f"rebuilt, then `GET /config/providers`), and at {int(f['models']):,} it re-reads a {f['config_kb']:,.0f} KiB "
        f"config and answers with every model, which the sidecar parses to confirm. Memory: the sidecar holds "
        f"{f['sidecar_rss_mib']:,.0f} MiB (target {RSS_TARGET_MIB}) and opencode {f['opencode_rss_mib']:,.0f} MiB at this size, against "
        f"{s['sidecar_rss_mib']:,.0f} and {s['opencode_rss_mib']:,.0f} MiB at {int(s['models']):,}."
    )
    if len(prompts) == 2 and prompts[1].ratio is not None:
        few, many = prompts
        text += (
            f" A prompt (after the first of its directory) takes {float(many.figures['median_ms'] or 0):,.0f} ms with "
            f"{int(many.figures['models'] or 0):,} models against {float(few.figures['median_ms'] or 0):,.0f} ms with "
            f"{int(few.figures['models'] or 0):,} ({many.ratio:.2f}×), and the first one "
            f"{float(many.figures['first_ms'] or 0):,.0f} against {float(few.figures['first_ms'] or 0):,.0f} ms: "
            + (
                "the list's size barely reaches a prompt once opencode has loaded it."
                if many.ratio < 1.25
                else "opencode's own work per prompt grows with the size of the provider's model list."
            )
        )
    text += bound_reading(rows)
    return text


def bound_reading(rows: list[Row]) -> str:
    """What the search found, and the sidecar's memory at the cap."""
    searched = [row for row in rows if row.case.startswith("health while reloading")]
    (largest,) = [row for row in rows if row.case.startswith("largest catalog")] or [None]
    (memory,) = [row for row in rows if row.case.startswith("memory at")] or [None]
    if largest is None or memory is None or not searched:
        return ""
    f, m = largest.figures, memory.figures
    worst = max(searched, key=lambda row: float(row.figures["health_max_ms"] or 0))
    text = (
        f" Reloading a catalog, opencode answers its health check late: the largest size whose reload kept every "
        f"answer within {HEALTHY_LATENCY:g} s was {int(f['models'] or 0):,} models"
    )
    if isinstance(f["first_unhealthy"], int) and f["first_unhealthy"]:
        text += f" (at {f['first_unhealthy']:,} one took longer)"
    text += (
        f"; the slowest answer measured was {float(worst.figures['health_max_ms'] or 0):,.0f} ms at "
        f"{int(worst.figures['models'] or 0):,} models, with a reload of {float(worst.figures['reload_ms'] or 0):,.0f} ms. "
        f"SIDECAR_MAX_MODELS defaults to {DEFAULT_MAX_MODELS:,}. With a gateway listing {int(m['listed'] or 0):,} "
        f"models ({m['list_mib']} MiB) the sidecar kept {int(m['kept'] or 0):,}, was ready in {m['ready_s']} s, and its "
        f"peak resident memory was {m['sidecar_peak_mib']} MiB (now {m['sidecar_rss_mib']}), against the "
        f"{K8S_LIMIT_MIB} MiB limit: most of the peak is the list itself, decoded whole before it is cut."
    )
    return text
