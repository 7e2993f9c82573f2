"""1. Serving the list: our GET /v1/models against LiteLLM's own, and against bare handlers.

For each gateway size (2 models; about 200 through a LiteLLM wildcard route) one LiteLLM proxy
and one sidecar following it; at each concurrency the same load generator loads, in turn, the
sidecar's /v1/models (`?limit=1000`, the whole list as LiteLLM serves it), LiteLLM's /v1/models
with its master key, and the floors: a bare Starlette route returning a prepared body of the
sidecar's answer under each serving stack (bench/floor.py: uvicorn's h11, uvicorn with httptools
and uvloop, granian). The target is at least 70% of the fastest floor's rate, with a p99 at most
twice that floor's.
"""

from __future__ import annotations

import contextlib

import httpx

from bench.common import Context, Row, benchmark
from bench.floor import STACKS, running_floor
from bench.loadgen import LoadResult, run_load
from bench.servers import TWO_MODELS, WILDCARD, shared_litellm
from tests.support.sidecar_process import start_sidecar

TARGET_SHARE = 0.7
TARGET_P99 = 2.0
TARGET = "≥ 0.7 × the fastest floor's requests/s, p99 ≤ 2 × its p99"


def _figures(result: LoadResult, models: int, body_bytes: int) -> dict[str, float | int | str | None]:
    return {
        "models": models,
        "c": result.connections,
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "errors": result.errors,
        "body_kb": round(body_bytes / 1024, 1),
    }


@benchmark("serving")
def run(ctx: Context) -> list[Row]:
    sizes = [("2", TWO_MODELS)] if ctx.small else [("2", TWO_MODELS), ("wildcard", WILDCARD)]
    concurrencies = (4,) if ctx.small else (1, 16, 64)
    seconds = 1.0 if ctx.small else 10.0
    rows: list[Row] = []
    for name, models in sizes:
        proxy = shared_litellm(ctx, name, models)
        ctx.log(f"serving: starting a sidecar over LiteLLM ({name})")
        # One poll at start, then none while the load runs (it would load LiteLLM too).
        sidecar = start_sidecar(
            ctx.workdir / f"serving-{name}", proxy.url, proxy.master_key, poll_interval="3600", log_level="info"
        )
        try:
            ours_url = f"{sidecar.api_url}/v1/models?limit=1000"
            litellm_url = f"{proxy.base_url}/models"
            litellm_headers = {"Authorization": f"Bearer {proxy.master_key}"}
            ours_body = httpx.get(ours_url, timeout=10).content
            litellm_body = httpx.get(litellm_url, headers=litellm_headers, timeout=10).content
            ours_count = len(httpx.Response(200, content=ours_body).json()["data"])
            litellm_count = len(httpx.Response(200, content=litellm_body).json()["data"])
            with contextlib.ExitStack() as floors:
                floor_urls = {
                    stack: floors.enter_context(running_floor(ctx.workdir / f"floor-{name}", ours_body, stack))
                    for stack in STACKS
                }
                for c in concurrencies:
                    # In turn, so that a noisy moment on the machine hits all of them alike.
                    ctx.log(f"serving: {ours_count} models, c={c}")
                    ours = run_load(ours_url, connections=c, seconds=seconds)
                    litellm = run_load(litellm_url, connections=c, seconds=seconds, headers=litellm_headers)
                    floor = {stack: run_load(url, connections=c, seconds=seconds) for stack, url in floor_urls.items()}
                    fastest = max(STACKS, key=lambda stack: floor[stack].rps)
                    best = floor[fastest]
                    share = ours.rps / best.rps if best.rps else 0.0
                    p99_ratio = ours.p99_ms / best.p99_ms if best.p99_ms else None
                    rows.append(
                        Row(
                            "serving",
                            f"sidecar /v1/models, {ours_count} models, c={c}",
                            {
                                **_figures(ours, ours_count, len(ours_body)),
                                "share_of_floor": round(share, 3),
                                "p99_of_floor": round(p99_ratio, 2) if p99_ratio is not None else None,
                            },
                            peer="LiteLLM /v1/models",
                            ratio=round(ours.rps / litellm.rps, 2) if litellm.rps else None,
                            target=TARGET,
                            met=share >= TARGET_SHARE and p99_ratio is not None and p99_ratio <= TARGET_P99,
                            note=f"load: {ours.tool}; the fastest floor here: {fastest}",
                        )
                    )
                    rows.append(
                        Row(
                            "serving",
                            f"LiteLLM /v1/models, {litellm_count} models, c={c}",
                            _figures(litellm, litellm_count, len(litellm_body)),
                            note=f"load: {litellm.tool}; the peer",
                        )
                    )
                    for stack in STACKS:
                        rows.append(
                            Row(
                                "serving",
                                f"floor: bare Starlette on {stack}, same body, c={c}",
                                _figures(floor[stack], ours_count, len(ours_body)),
                                note=f"load: {floor[stack].tool}; prepared bytes",
                            )
                        )
        finally:
            sidecar.stop()
    return rows


def reading(rows: list[Row]) -> str:
    ours = [row for row in rows if row.case.startswith("sidecar")]
    floors = [row for row in rows if row.case.startswith("floor")]
    peers = [row for row in rows if row.case.startswith("LiteLLM")]
    if not ours or not floors:
        return ""
    shares = [row.number("share_of_floor") for row in ours]
    ratios = [row.ratio for row in ours if row.ratio is not None]
    met = sum(1 for row in ours if row.met)
    tool = ours[0].note.removeprefix("load: ")
    lowest_c = min(int(row.number("c")) for row in ours)
    ours_p50 = min(row.number("p50_ms") for row in ours if row.number("c") == lowest_c)
    floor_p50 = max(row.number("p50_ms") for row in floors if row.number("c") == lowest_c)
    parts = []
    if ours_p50 >= 35 and floor_p50 < 5:
        # The signature of Nagle's algorithm meeting the client's delayed ACK (40 ms on Linux).
        parts.append(
            f"Every answer of ours takes at least {ours_p50:.0f} ms, at any list size and any load, while the "
            f"floor answers the same bytes in {floor_p50:.2f} ms: that is the kernel's delayed-ACK timer, not our "
            f"work. The sidecar binds its API socket itself as `socket.socket(family, SOCK_STREAM)`, protocol 0; "
            f"asyncio sets TCP_NODELAY only on sockets whose `proto` is IPPROTO_TCP, so accepted connections keep "
            f"Nagle's algorithm and uvicorn's second write (the body, after the headers) waits for the client's "
            f"delayed ACK. Our rate is then about connections / 44 ms, {min(shares):.1%} to {max(shares):.1%} of "
            f"the floor; creating the socket with IPPROTO_TCP (or setting TCP_NODELAY on it) removes the wait."
        )
    else:
        big = max(ours, key=lambda row: row.number("models"))
        peaks = ", ".join(
            f"{stack} {max(row.number('rps') for row in floors if f' on {stack},' in row.case):,.0f}"
            for stack in STACKS
            if any(f" on {stack}," in row.case for row in floors)
        )
        p99s = [row.number("p99_of_floor") for row in ours if row.figures.get("p99_of_floor") is not None]
        parts.append(
            f"Our list is served from memory, each page prepared (body and headers) once per catalog, and a read of "
            f"it is answered in front of Starlette's middleware and router (sidecar/http/fast_reads.py) once the same "
            f"Host/Origin and key checks pass, head and body in one write; what is left per request is those checks, "
            f"a dict lookup and uvicorn's httptools protocol on uvloop, in the sidecar's one process, which also polls "
            f"and supervises. It reaches "
            f"{min(shares):.0%} to {max(shares):.0%} of the fastest floor's rate at each load (the floors peak at "
            f"{peaks} req/s; ours at {max(row.number('rps') for row in ours):,.0f}), with a p99 "
            f"{min(p99s, default=0):.1f} to {max(p99s, default=0):.1f} times the fastest floor's; at "
            f"{big.figures['models']} models ({big.figures['body_kb']} KiB) it reaches {big.number('share_of_floor'):.0%}."
        )
    parts.append(f"The target ({TARGET}) is met in {met} of {len(ours)} cases.")
    if ratios and peers:
        worst_peer = max(peers, key=lambda row: row.number("p99_ms"))
        parts.append(
            f"Against LiteLLM's own /v1/models we serve {min(ratios):.2f}× to {max(ratios):.2f}× its rate; LiteLLM "
            f"checks the key and builds its list per request through FastAPI, and its p99 reaches "
            f"{worst_peer.number('p99_ms'):,.0f} ms ({worst_peer.case})."
        )
        if max(row.number("models") for row in peers) > max(row.number("models") for row in ours):
            parts.append(
                "LiteLLM's wildcard list is longer than ours because the sidecar leaves out the models LiteLLM "
                "marks as not for chat (embeddings, images, audio, ...)."
            )
    parts.append(
        f"Every figure is bounded by the load generator ({tool}) sharing the machine's cores with the server: "
        f"past one connection per core, added connections add queueing (p99) rather than throughput."
    )
    return " ".join(parts)
