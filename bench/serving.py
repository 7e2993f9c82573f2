"""1. Serving the list: our GET /v1/models against LiteLLM's own, and against a bare handler.

For each gateway size (2 models; about 200 through a LiteLLM wildcard route) one LiteLLM proxy
and one sidecar following it; at each concurrency the same load generator loads, in turn, the
sidecar's /v1/models (`?limit=1000`, the whole list as LiteLLM serves it), LiteLLM's /v1/models
with its master key, and the floor: a bare Starlette route under uvicorn returning a prepared
body of the sidecar's answer (bench/floor.py). The target is at least half the floor's rate.
"""

from __future__ import annotations

import httpx

from bench.common import Context, Row, benchmark
from bench.floor import running_floor
from bench.loadgen import LoadResult, run_load
from bench.servers import TWO_MODELS, WILDCARD, shared_litellm
from tests.support.sidecar_process import start_sidecar

TARGET_SHARE = 0.5
TARGET = "≥ 0.5 × the bare Starlette floor's requests/s"


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
            with running_floor(ctx.workdir / f"floor-{name}", ours_body) as floor_url:
                for c in concurrencies:
                    # In turn, so that a noisy moment on the machine hits all three alike.
                    ctx.log(f"serving: {ours_count} models, c={c}")
                    ours = run_load(ours_url, connections=c, seconds=seconds)
                    litellm = run_load(litellm_url, connections=c, seconds=seconds, headers=litellm_headers)
                    floor = run_load(floor_url, connections=c, seconds=seconds)
                    share = ours.rps / floor.rps if floor.rps else 0.0
                    rows.append(
                        Row(
                            "serving",
                            f"sidecar /v1/models, {ours_count} models, c={c}",
                            {**_figures(ours, ours_count, len(ours_body)), "share_of_floor": round(share, 2)},
                            peer="LiteLLM /v1/models",
                            ratio=round(ours.rps / litellm.rps, 2) if litellm.rps else None,
                            target=TARGET,
                            met=share >= TARGET_SHARE,
                            note=f"load: {ours.tool}",
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
                    rows.append(
                        Row(
                            "serving",
                            f"floor: bare Starlette, same body, c={c}",
                            _figures(floor, ours_count, len(ours_body)),
                            note=f"load: {floor.tool}; prepared bytes, uvicorn as ours",
                        )
                    )
        finally:
            sidecar.stop()
    return rows


def reading(rows: list[Row]) -> str:
    ours = [row for row in rows if row.case.startswith("sidecar")]
    if not ours:
        return ""
    shares = [float(row.figures["share_of_floor"] or 0) for row in ours]
    ratios = [row.ratio for row in ours if row.ratio is not None]
    floors = [float(row.figures["rps"] or 0) for row in rows if row.case.startswith("floor")]
    best_ours = max(ours, key=lambda row: float(row.figures["rps"] or 0))
    met = sum(1 for row in ours if row.met)
    tool = best_ours.note.removeprefix("load: ")
    big = max(ours, key=lambda row: int(row.figures["models"] or 0))
    return (
        f"Our list is served from memory, but each request still builds the page (pydantic `model_dump`, "
        f"then JSON) in the one asyncio process of the sidecar, which also polls and supervises. "
        f"It reaches {min(shares):.0%} to {max(shares):.0%} of the bare handler's rate "
        f"(the floor peaks at {max(floors):,.0f} req/s, ours at {float(best_ours.figures['rps'] or 0):,.0f}); "
        f"the target of half the floor is met in {met} of {len(ours)} cases. The cost grows with the list: "
        f"at {big.figures['models']} models ({big.figures['body_kb']} KiB) ours reaches {float(big.figures['share_of_floor'] or 0):.0%} of the floor, "
        f"so serialising the page, not the socket, is what limits it there. "
        f"Against LiteLLM's own /v1/models we serve {min(ratios):.1f}× to {max(ratios):.1f}× its rate: LiteLLM checks the key "
        f"and builds its list per request through FastAPI. The floor itself is bounded by uvicorn's pure-Python h11 "
        f"parser (httptools is not installed) and by the load generator ({tool}) sharing the machine's cores with "
        f"the server; past one connection per core, added connections add queueing (p99) rather than throughput."
    )
