"""Registrations under load: many agents asking at once for models the gateway doesn't list.

One real sidecar (polling an hour apart, so nothing but registrations writes) supervises the real
`opencode serve` over a real LiteLLM proxy with a wildcard route (`openai/*`), with a session
in each of several directories so that every config write reloads each of them. Then
`POST /v1/models/resolve` for N distinct new names, all at once, each for one of those
directories; then N other new names one after another, the way one agent after another would
(the peer, same sidecar, same run). Each resolve answers once its directory lists the model.
Config writes (`opencode.config_written`) and directory reloads (`opencode.reloaded`) are
counted from the sidecar's log, from the first request until no reload is pending.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import anyio
import httpx

from bench.common import Context, Row, benchmark
from tests.support import litellm_proxy as lp
from tests.support.sidecar_process import SidecarProcess, start_sidecar

WILDCARD = lp.model_entry("openai/*", {"model": "openai/*", "mock_response": "wildcard answer"})
TARGET = "registrations arriving together: one config write and one reload per directory for a few, not per name"


def _settled(sidecar: SidecarProcess) -> bool:
    with sidecar.api() as api:
        reloads = api.get("/v1/status").json()["reloads"]
    return bool(reloads["applied"]) and not reloads["pending_reloads"]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


async def _resolve_at_once(api_url: str, bodies: list[dict[str, str]]) -> list[tuple[int, float]]:
    answers: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=api_url, timeout=300, limits=limits) as client:

        async def one(body: dict[str, str]) -> None:
            started = time.perf_counter()
            try:
                status = (await client.post("/v1/models/resolve", json=body)).status_code
            except httpx.HTTPError:
                status = 0
            answers.append((status, time.perf_counter() - started))

        async with anyio.create_task_group() as group:
            for body in bodies:
                group.start_soon(one, body)
    return answers


def _resolve_in_turn(api_url: str, bodies: list[dict[str, str]]) -> list[tuple[int, float]]:
    answers = []
    with httpx.Client(base_url=api_url, timeout=300) as client:
        for body in bodies:
            started = time.perf_counter()
            try:
                status = client.post("/v1/models/resolve", json=body).status_code
            except httpx.HTTPError:
                status = 0
            answers.append((status, time.perf_counter() - started))
    return answers


def _measure(
    sidecar: SidecarProcess, how: str, bodies: list[dict[str, str]], directories: list[str]
) -> dict[str, float | int | str | None]:
    writes_before = len(sidecar.events("opencode.config_written"))
    reloads_before = len(sidecar.events("opencode.reloaded"))
    started = time.perf_counter()
    if how == "at once":
        answers = anyio.run(_resolve_at_once, sidecar.api_url, bodies)
    else:
        answers = _resolve_in_turn(sidecar.api_url, bodies)
    total = time.perf_counter() - started
    settled = _wait(lambda: _settled(sidecar), 300)
    writes = len(sidecar.events("opencode.config_written")) - writes_before
    reloaded = Counter(e["directory"] for e in sidecar.events("opencode.reloaded")[reloads_before:])
    seconds = sorted(s for _, s in answers)
    return {
        "resolves": len(bodies),
        "ok": sum(1 for status, _ in answers if status == 200),
        "total_s": round(total, 2),
        "p50_s": round(seconds[len(seconds) // 2], 2),
        "max_s": round(seconds[-1], 2),
        "config_writes": writes,
        "directories": len(directories),
        "reloads": sum(reloaded.values()),
        "max_reloads_per_directory": max((reloaded[d] for d in directories), default=0),
        "settled": "yes" if settled else "no",
    }


@benchmark("registrations")
def run(ctx: Context) -> list[Row]:
    names, directory_count = (10, 2) if ctx.small else (100, 6)
    workdir = ctx.workdir / "registrations"
    proxy = lp.start_proxy(workdir / "gateway", [lp.mock_model("gpt-5.5", "gpt-5.5 answer"), WILDCARD])
    try:
        sidecar = start_sidecar(workdir / "sidecar", proxy.url, proxy.master_key, poll_interval="3600", log_level="info")
        try:
            directories = [str(sidecar.directory)]
            for i in range(directory_count - 1):
                path = workdir / f"project-{i}"
                path.mkdir(parents=True, exist_ok=True)
                directories.append(str(path))
            with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
                for directory in directories:  # a session in each: each directory is reloaded on a change
                    client.post("/session", params={"directory": directory}, json={}).raise_for_status()
            if not _wait(lambda: _settled(sidecar), 60):
                raise RuntimeError("the sidecar never applied its first config in every directory")
            ctx.log(f"registrations: {len(directories)} directories known, {names} resolves at once")

            def bodies(prefix: str) -> list[dict[str, str]]:
                return [{"model": f"openai/{prefix}-{i}", "directory": directories[i % len(directories)]} for i in range(names)]

            together = _measure(sidecar, "at once", bodies("together"), directories)
            ctx.log(f"registrations: at once: {together}")
            in_turn = _measure(sidecar, "in turn", bodies("in-turn"), directories)
            ctx.log(f"registrations: one after another: {in_turn}")
        finally:
            sidecar.stop()
    finally:
        lp.stop_proxy(proxy)
    what = f"{names} resolves of new names, {directory_count} directories with a session"
    ratio = round(float(together["total_s"]) / float(in_turn["total_s"]), 2) if in_turn["total_s"] else None
    met = together["ok"] == names and int(together["config_writes"]) <= max(3, names // 10)
    return [
        Row(
            "registrations",
            f"{what}, all at once",
            together,
            peer="the same number of new names resolved one after another, same sidecar",
            ratio=ratio,
            target=TARGET,
            met=met,
            note="ratio: total_s at once / one after another",
        ),
        Row("registrations", f"{what}, one after another", in_turn, note="the peer: a write and reloads per name"),
    ]


def _count(n: object, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def reading(rows: list[Row]) -> str:
    together, in_turn = rows[0].figures, rows[1].figures
    return (
        f"{together['resolves']} registrations arriving together took {_count(together['config_writes'], 'config write')} "
        f"and at most {_count(together['max_reloads_per_directory'], 'reload')} per directory ({together['total_s']} s in "
        f"all); one after another, each is a write of its own and a reload of (nearly) every directory "
        f"({_count(in_turn['config_writes'], 'write')}, {_count(in_turn['reloads'], 'reload')}, {in_turn['total_s']} s). "
        "A registration waits for the write in flight, then shares the next one with every registration that arrived "
        "meanwhile; what is left per write is opencode's rebuild of each directory's instance after its reload, which "
        "the resolves of that directory wait for together."
    )
