"""8. Key custody's hop: opencode's model requests through the sidecar's gateway route, against the
same requests straight to the gateway, in one run.

The gateway is a fake OpenAI-compatible one of this module's own, under uvicorn in a process of its
own, answering at once and keeping connections alive as real gateways do: what is measured is the
hop, not a model. Three cases, each through
`/gateway/<id>/v1/chat/completions` with the internal token and then straight to the gateway with
its key: a non-streamed completion, one at a time (p50/p99 and what the hop adds); a streamed one,
one at a time (time to its first byte); and 64 streams at once, each asking again as soon as its
answer ends (events a second, and the sidecar's CPU meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from bench.common import Context, Row, benchmark
from bench.servers import cpu_seconds, serving
from tests.support.litellm_proxy import free_port
from tests.support.sidecar_process import start_sidecar

TOKEN = "bench-custody-internal-token-00000000000000000"
GATEWAY_KEY = "sk-bench-custody-gateway-key"
# Events of each streamed answer (each about 200 bytes, as a model's token deltas are).
CHUNKS = 100
# A fast model's pace: 50 tokens a second, each its own event.
PACE = 0.02
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}


def create_gateway_app(chunks: int) -> Starlette:
    """An OpenAI-compatible gateway that answers at once, keeps connections alive, and streams
    `chunks` events without pauses: what a fast gateway near the sidecar would be."""
    listing = json.dumps({"object": "list", "data": [{"id": "slow", "object": "model", "owned_by": "bench"}]}).encode()
    completion = json.dumps(
        {"id": "c", "object": "chat.completion", "model": "slow",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
    ).encode()
    event = b"data: " + json.dumps(
        {"id": "c", "object": "chat.completion.chunk", "model": "slow",
         "choices": [{"index": 0, "delta": {"content": "token "}, "finish_reason": None}]}
    ).encode() + b"\n\n"

    async def models(_request: Request) -> Response:
        return Response(listing, media_type="application/json")

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if not body.get("stream"):
            return Response(completion, media_type="application/json")

        # A model's pace, when the request asks for one: seconds between events.
        pace = float(body.get("pace", 0))

        async def events() -> AsyncIterator[bytes]:
            for i in range(chunks):
                if pace and i:
                    await asyncio.sleep(pace)
                yield event
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])


@contextmanager
def running_gateway(workdir: Path) -> Iterator[str]:
    """The bench gateway under uvicorn in a subprocess; yields its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(["bench.custody", "--port", str(port)], workdir / "gateway.log", f"{url}/v1/models", stdout_to_log=True):
        yield url


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def completions(url: str, headers: dict[str, str], count: int) -> list[float]:
    """Milliseconds of each of `count` non-streamed completions, one after another."""
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(3):  # warm: connections made, code paths loaded
            client.post(url, json=BODY).raise_for_status()
        for _ in range(count):
            start = time.perf_counter()
            client.post(url, json=BODY).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return times


def first_bytes(url: str, headers: dict[str, str], count: int) -> list[float]:
    """Milliseconds from sending each of `count` streamed completions to its answer's first byte."""
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        for i in range(count + 3):
            start = time.perf_counter()
            with client.stream("POST", url, json={**BODY, "stream": True}) as answer:
                answer.raise_for_status()
                chunks = answer.iter_raw()
                next(chunks)
                if i >= 3:  # the first three warm up
                    times.append((time.perf_counter() - start) * 1000)
                for _ in chunks:
                    pass
    return times


async def _streams(
    url: str, headers: dict[str, str], streams: int, seconds: float, pace: float
) -> tuple[int, int, int]:
    """`streams` clients, each asking for a streamed answer again as soon as its last one ended;
    the events and answers whole, and the failures, in `seconds`."""
    events = answers = errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal events, answers, errors
        while time.monotonic() < stop:
            try:
                async with client.stream("POST", url, json={**BODY, "stream": True, "pace": pace}) as answer:
                    answer.raise_for_status()
                    async for line in answer.aiter_lines():
                        if line.startswith("data: "):
                            events += 1
                answers += 1
            except httpx.HTTPError:
                errors += 1

    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(streams)))
    return events, answers, errors


def concurrent_streams(
    url: str, headers: dict[str, str], streams: int, seconds: float, pid: int, pace: float = 0.0
) -> dict[str, float | int]:
    cpu = cpu_seconds(pid)
    start = time.monotonic()
    events, answers, errors = asyncio.run(_streams(url, headers, streams, seconds, pace))
    wall = time.monotonic() - start
    return {
        "streams": streams,
        "events_per_s": round(events / wall, 1),
        "events_per_s_each": round(events / wall / streams, 1),
        "answers": answers,
        "errors": errors,
        "sidecar_cpu_pct": round((cpu_seconds(pid) - cpu) / wall * 100, 1),
    }


@benchmark("custody")
def run(ctx: Context) -> list[Row]:
    count = 30 if ctx.small else 1000
    ttfb_count = 10 if ctx.small else 300
    streams = 4 if ctx.small else 64
    seconds = 1.0 if ctx.small else 10.0
    with running_gateway(ctx.workdir / "custody-gateway") as gateway_url:
        ctx.log("custody: starting a sidecar over the fake gateway")
        sidecar = start_sidecar(
            ctx.workdir / "custody", gateway_url, GATEWAY_KEY, poll_interval="3600", log_level="info",
            gateway_token=TOKEN,
        )
        try:
            ours_url = f"{sidecar.api_url}/gateway/litellm/v1/chat/completions"
            ours_headers = {"authorization": f"Bearer {TOKEN}"}
            direct_url = f"{gateway_url}/v1/chat/completions"
            direct_headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
            pid = sidecar.process.pid
            rows = []

            ctx.log(f"custody: {count} non-streamed completions, through the sidecar and straight")
            ours, direct = completions(ours_url, ours_headers, count), completions(direct_url, direct_headers, count)
            added_p50 = statistics.median(ours) - statistics.median(direct)
            rows.append(
                Row(
                    "custody",
                    f"non-streamed completion through the sidecar, {count} one at a time",
                    {
                        "p50_ms": round(statistics.median(ours), 2),
                        "p99_ms": round(percentile(ours, 0.99), 2),
                        "added_p50_ms": round(added_p50, 2),
                        "added_p99_ms": round(percentile(ours, 0.99) - percentile(direct, 0.99), 2),
                    },
                    peer=f"straight to the gateway: p50 {statistics.median(direct):.2f} ms, p99 {percentile(direct, 0.99):.2f} ms",
                    ratio=round(statistics.median(ours) / statistics.median(direct), 2),
                    target="<= 1 ms added at p50",
                    met=added_p50 <= 1.0,
                )
            )

            ctx.log(f"custody: {ttfb_count} streamed completions' first byte, through the sidecar and straight")
            ours, direct = first_bytes(ours_url, ours_headers, ttfb_count), first_bytes(direct_url, direct_headers, ttfb_count)
            rows.append(
                Row(
                    "custody",
                    f"streamed completion's first byte through the sidecar, {ttfb_count} one at a time",
                    {
                        "p50_ms": round(statistics.median(ours), 2),
                        "p99_ms": round(percentile(ours, 0.99), 2),
                        "added_p50_ms": round(statistics.median(ours) - statistics.median(direct), 2),
                        "added_p99_ms": round(percentile(ours, 0.99) - percentile(direct, 0.99), 2),
                    },
                    peer=f"straight to the gateway: p50 {statistics.median(direct):.2f} ms, p99 {percentile(direct, 0.99):.2f} ms",
                    ratio=round(statistics.median(ours) / statistics.median(direct), 2),
                )
            )

            ctx.log(f"custody: {streams} streams at once as fast as they go for {seconds:g} s, through and straight")
            ours_load = concurrent_streams(ours_url, ours_headers, streams, seconds, pid)
            direct_load = concurrent_streams(direct_url, direct_headers, streams, seconds, pid)
            ctx.log(f"custody: {streams} streams at a model's pace ({1 / PACE:g} events/s each), through and straight")
            ours_paced = concurrent_streams(ours_url, ours_headers, streams, seconds, pid, PACE)
            direct_paced = concurrent_streams(direct_url, direct_headers, streams, seconds, pid, PACE)
            rows.append(
                Row(
                    "custody",
                    f"{streams} concurrent streams at {1 / PACE:g} events/s each through the sidecar",
                    ours_paced,
                    peer=f"straight to the gateway: {direct_paced['events_per_s_each']:,} events/s each",
                    ratio=round(ours_paced["events_per_s"] / direct_paced["events_per_s"], 2) if direct_paced["events_per_s"] else None,
                    target="no throughput loss a user would notice",
                    met=bool(direct_paced["events_per_s"]) and ours_paced["events_per_s"] >= 0.95 * direct_paced["events_per_s"],
                    note="a model's pace; ratio is events/s ours / straight",
                )
            )
            rows.append(
                Row(
                    "custody",
                    f"{streams} concurrent streams at {1 / PACE:g} events/s each straight to the gateway",
                    {key: value for key, value in direct_paced.items() if key != "sidecar_cpu_pct"},
                    note="the peer, no sidecar",
                )
            )
            rows.append(
                Row(
                    "custody",
                    f"{streams} concurrent streams through the sidecar",
                    ours_load,
                    peer=f"straight to the gateway: {direct_load['events_per_s']:,} events/s",
                    ratio=round(ours_load["events_per_s"] / direct_load["events_per_s"], 2) if direct_load["events_per_s"] else None,
                    note=f"as fast as the gateway sends: the most the hop passes; {CHUNKS} events an answer",
                )
            )
            rows.append(
                Row(
                    "custody",
                    f"{streams} concurrent streams straight to the gateway",
                    {key: value for key, value in direct_load.items() if key != "sidecar_cpu_pct"},
                    note="the peer, no sidecar",
                )
            )
        finally:
            sidecar.stop()
    return rows


def reading(rows: list[Row]) -> str:
    plain = next((row for row in rows if row.case.startswith("non-streamed")), None)
    first = next((row for row in rows if row.case.startswith("streamed")), None)
    paced = next((row for row in rows if "events/s each through" in row.case), None)
    flat = next((row for row in rows if row.case.endswith("concurrent streams through the sidecar")), None)
    if plain is None or first is None or paced is None or flat is None:
        return ""
    return (
        f"The hop through the sidecar added {plain.number('added_p50_ms'):.2f} ms at p50 and "
        f"{plain.number('added_p99_ms'):.2f} ms at p99 to a non-streamed completion, and "
        f"{first.number('added_p50_ms'):.2f} ms to a streamed one's first byte at p50. "
        f"{int(paced.number('streams'))} streams at a model's pace passed {paced.ratio or 0:.2f} times the events "
        f"they did straight to the gateway ({paced.number('events_per_s_each'):.1f} events/s each), with the sidecar at "
        f"{paced.number('sidecar_cpu_pct'):.0f} % of a core; as fast as the gateway could send, they passed "
        f"{flat.number('events_per_s'):,.0f} events/s ({flat.ratio or 0:.2f} of straight), the sidecar at "
        f"{flat.number('sidecar_cpu_pct'):.0f} %. "
        "The gateway is a fake of ours answering at once, in a process of its own; the load generator is Python in "
        "the benchmark's process, on the same cores as the sidecar and the gateway: through the sidecar three busy "
        "processes share them, straight only two, so the unpaced ratio is the machine's as much as the hop's. What "
        "the hop costs per request is an HTTP/1.1 exchange parsed by uvicorn's httptools protocol and one made "
        "by aiohttp, both on uvloop, with Starlette's routing and our guards between them: well under a "
        "millisecond of work; a real model's answer takes hundreds."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the custody benchmark's gateway")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        create_gateway_app(CHUNKS), host="127.0.0.1", port=args.port, loop="asyncio", log_config=None,
        access_log=False, lifespan="off", backlog=2048,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
