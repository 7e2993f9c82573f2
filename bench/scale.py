"""4. Scale: synthetic catalogs of 10, 1,000 and 10,000 models.

The gateway is tests/support/fake_upstream serving an OpenAI-shaped list of N models (it also
answers chat completions for any model, so prompts work). A poll's own steps are timed in this
process by calling the sidecar's functions, each as its poll runs them: fetch (GatewayClient:
HTTP GET, parse, build the Catalog with its fingerprint), diff (compare with the previous list:
`same_models` and the added/removed sets), render (`render_config` and `dump_config`) and write
(the saved list and opencode.json, each `write_atomically` with fsyncs). opencode's own reload is
timed against a real sidecar supervising the real opencode: one model is added to the gateway,
and the time runs from the sidecar's `opencode.config_written` to its `opencode.applied` (the
directory disposed, then `GET /config/providers` listing exactly the rendered models). Memory
is VmRSS of the sidecar and of opencode after that change. Prompt latency is a
blocking prompt through opencode to a model of the synthetic provider (after a first, cold one).
"""

from __future__ import annotations

import datetime
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from bench.common import Context, Row, benchmark
from bench.servers import rss_mib
from sidecar.catalog import Catalog
from sidecar.gateway.client import GatewayClient
from sidecar.opencode.config import dump_config, render_config, write_atomically
from sidecar.settings import load_settings
from tests.support import fake_upstream, opencode_api
from tests.support.sidecar_process import SidecarProcess, start_sidecar

CREATED = fake_upstream.CREATED


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
    """Median milliseconds of each step of one poll that finds a one-model change."""
    settings = load_settings(
        gateway_url=f"http://127.0.0.1:{upstream.port}", gateway_format="openai", gateway_api_key="bench", state_dir=scratch
    )
    gateway = settings.gateways[0]

    async def measure() -> dict[str, float]:
        client = GatewayClient(gateway, settings)
        try:
            catalog = await client.fetch_catalog()
            fetch = await _timed(client.fetch_catalog, reps)
        finally:
            await client.aclose()
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

        async def write() -> None:
            write_atomically(scratch / f"catalog-{gateway.id}.json", catalog.to_json())
            write_atomically(scratch / "opencode.json", text)

        return {
            "fetch_ms": _median_ms(fetch),
            "catalog_ms": _median_ms(await _timed(build, reps)),
            "diff_ms": _median_ms(await _timed(diff, reps)),
            "render_ms": _median_ms(await _timed(render, reps)),
            "write_ms": _median_ms(await _timed(write, reps)),
            "config_kb": round(len(text.encode()) / 1024, 1),
        }

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
                ctx.workdir / f"scale-{count}", f"http://127.0.0.1:{upstream.port}", "bench", log_level="info", wait=False
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
        total = steps["fetch_ms"] + steps["diff_ms"] + steps["render_ms"] + steps["write_ms"] + reload["reload_ms"]
        rows.append(
            Row(
                "scale",
                f"{count:,} models",
                {"models": count, **steps, **reload, "poll_to_applied_ms": round(total, 1), **memory},
                note="catalog_ms is part of fetch_ms; poll_to_applied = fetch + diff + render + write + reload",
            )
        )
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
    steps = [row for row in rows if not row.case.startswith("prompt")]
    prompts = [row for row in rows if row.case.startswith("prompt")]
    if not steps:
        return ""
    big = max(steps, key=lambda row: int(row.figures["models"] or 0))
    smallest = min(steps, key=lambda row: int(row.figures["models"] or 0))
    f = {key: float(value) for key, value in big.figures.items() if isinstance(value, (int, float))}
    s = {key: float(value) for key, value in smallest.figures.items() if isinstance(value, (int, float))}
    parts = {name: f[f"{name}_ms"] for name in ("fetch", "diff", "render", "write", "reload")}
    ours = parts["fetch"] + parts["diff"] + parts["render"] + parts["write"]
    slowest = max(parts, key=lambda name: parts[name])
    text = (
        f"At {int(f['models']):,} models a change costs the sidecar {ours:,.0f} ms (fetch {parts['fetch']:,.0f}, of which "
        f"building the catalog {f['catalog_ms']:,.0f}; diff {parts['diff']:.2f}; render {parts['render']:,.0f}; write "
        f"{parts['write']:,.0f}) and opencode {parts['reload']:,.0f} ms to reload and list them back, so the largest "
        f"part is {'opencode' + chr(39) + 's reload' if slowest == 'reload' else slowest}. Fetch, render and write are "
        f"pure Python over every model (pydantic validation and the fingerprint, the escaping JSON writer, the "
        f"saved list's JSON, then fsyncs), so they grow with the list: at {int(s['models']):,} models they take "
        f"{s['fetch_ms']:.1f}, {s['render_ms']:.2f} and {s['write_ms']:.1f} ms. Diff compares fingerprints computed "
        f"while the catalog is built; only a changed list pays for the added and removed sets "
        f"({parts['diff']:.2f} ms here). opencode's reload has a "
        f"floor of about {s['reload_ms']:,.0f} ms even at {int(s['models']):,} models (the directory disposed and "
        f"rebuilt, then `GET /config/providers`), and at {int(f['models']):,} it re-reads a {f['config_kb']:,.0f} KiB "
        f"config and answers with every model, which the sidecar parses to confirm. Memory: the sidecar holds "
        f"{f['sidecar_rss_mib']:,.0f} MiB and opencode {f['opencode_rss_mib']:,.0f} MiB at this size, against "
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
    return text
