"""Propagation: how long from a gateway list change to the model answering a prompt in opencode,
how long a resolve of a model the gateway doesn't list takes for an idle directory, and the same
changes followed by a refresh (POST /v1/models/refresh) on a sidecar that polls once an hour.

The real sidecar (poll every 1 s) follows a `Front` over a real LiteLLM proxy, with the real
`opencode serve` under it. Each change adds `openai/bench-<i>` to the front's list at a random
point of the poll cycle; the clock runs until a blocking prompt with that model, in a fresh
session, answers without an error. Polls of `GET /config/providers` every 50 ms also time when
opencode first lists the model. Then `POST /v1/models/resolve` is timed for unlisted models.
"""

from __future__ import annotations

import random
import time

import httpx

from bench.common import Context, Row, benchmark
from bench.lab import SLOW, Front, answers, distribution, lab
from tests.support import litellm_proxy as lp
from tests.support.opencode_api import provider_models
from tests.support.sidecar_process import SidecarProcess, start_sidecar

POLL_INTERVAL = 1.0
GIVE_UP_AFTER = 60.0  # seconds one change may take before it counts as not propagated


def _until(predicate, timeout: float, step: float) -> float | None:
    """The monotonic time `predicate()` first held, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    return None


def _propagate(ctx: Context, front: Front, sidecar: SidecarProcess, changes: int) -> tuple[list[float], list[float], int]:
    directory = str(sidecar.directory)
    rng = random.Random(8)  # the same phases of the poll cycle on every run
    listed_times: list[float] = []
    answered_times: list[float] = []
    lost = 0
    with sidecar.opencode(timeout=30) as opencode:
        for i in range(1, changes + 1):
            # Changes land anywhere in the poll cycle, not just after the last answer.
            time.sleep(rng.uniform(0, POLL_INTERVAL))
            model_id = f"openai/bench-{i}"
            changed = front.set_models([*front.models, model_id])
            listed = _until(lambda m=model_id: m in provider_models(opencode, directory), GIVE_UP_AFTER, 0.05)
            answered = _until(lambda m=model_id: answers(opencode, directory, f"litellm/{m}"), GIVE_UP_AFTER, 0.05)
            if listed is None or answered is None:
                lost += 1
                ctx.log(f"propagation: change {i} not answered within {GIVE_UP_AFTER:g} s")
                continue
            listed_times.append(listed - changed)
            answered_times.append(answered - changed)
            if i % 10 == 0 or i == changes:
                ctx.log(f"propagation: {i}/{changes} changes, last {answered - changed:.2f} s")
    return listed_times, answered_times, lost


def _refreshed(ctx: Context, front: Front, sidecar: SidecarProcess, changes: int, first: int) -> tuple[list[float], list[float], int]:
    """As _propagate, but each change is followed at once by POST /v1/models/refresh (as a gateway's
    deploy pipeline would), on a sidecar that polls once an hour: the refresh's time, and the
    change's to a prompt answered."""
    directory = str(sidecar.directory)
    refresh_times: list[float] = []
    answered_times: list[float] = []
    lost = 0
    with httpx.Client(base_url=sidecar.api_url, timeout=GIVE_UP_AFTER, trust_env=False) as api, sidecar.opencode(timeout=30) as opencode:
        for i in range(first, first + changes):
            model_id = f"openai/bench-{i}"
            changed = front.set_models([*front.models, model_id])
            refreshed = api.post("/v1/models/refresh")
            done = time.monotonic()
            answered = _until(lambda m=model_id: answers(opencode, directory, f"litellm/{m}"), GIVE_UP_AFTER, 0.05)
            if refreshed.status_code != 200 or answered is None:
                lost += 1
                ctx.log(f"propagation: refreshed change {i} not answered (refresh: HTTP {refreshed.status_code})")
                continue
            refresh_times.append(done - changed)
            answered_times.append(answered - changed)
    return refresh_times, answered_times, lost


def _prompt_alone(sidecar: SidecarProcess, model: str, prompts: int) -> list[float]:
    """The time a prompt takes with a model opencode already lists: the floor under every figure."""
    directory = str(sidecar.directory)
    times = []
    with sidecar.opencode(timeout=30) as opencode:
        for _ in range(prompts):
            started = time.monotonic()
            if answers(opencode, directory, model):
                times.append(time.monotonic() - started)
    return times


def _resolve(ctx: Context, sidecar: SidecarProcess, calls: int) -> tuple[list[float], int, int]:
    directory = str(sidecar.directory)
    times: list[float] = []
    failed = usable = 0
    with httpx.Client(base_url=sidecar.api_url, timeout=180, trust_env=False) as api, sidecar.opencode() as opencode:
        for i in range(1, calls + 1):
            started = time.monotonic()
            response = api.post("/v1/models/resolve", json={"model": f"openai/unlisted-{i}", "directory": directory})
            elapsed = time.monotonic() - started
            if response.status_code != 200:
                failed += 1
                ctx.log(f"propagation: resolve {i} answered HTTP {response.status_code}: {response.text[:200]}")
                continue
            times.append(elapsed)
            ref = response.json()["opencode"]
            # Not timed: that the answer means what it says, the model answers at once.
            usable += answers(opencode, directory, f"{ref['providerID']}/{ref['modelID']}")
    return times, failed, usable


@benchmark("propagation")
def run(ctx: Context) -> list[Row]:
    changes = 3 if ctx.small else 50
    resolves = 3 if ctx.small else 10
    listed_already = "openai/bench-0"
    with lab(ctx.workdir / "propagation", [SLOW, listed_already], ctx.log) as bench_lab:
        sidecar = start_sidecar(
            ctx.workdir / "propagation" / "sidecar", bench_lab.front.url, lp.MASTER_KEY, poll_interval=f"{POLL_INTERVAL:g}",
            # The front lists no wildcard route: the unlisted names timed are registered blind.
            unlisted_models="register",
        )
        try:
            with sidecar.opencode() as opencode:  # the directory loaded, as an agent's would be
                provider_models(opencode, str(sidecar.directory))
            alone = _prompt_alone(sidecar, f"litellm/{listed_already}", resolves)
            listed, answered, lost = _propagate(ctx, bench_lab.front, sidecar, changes)
            resolved, resolve_failed, usable = _resolve(ctx, sidecar, resolves)
            restarts = len(sidecar.events("child.started")) - 1
        finally:
            sidecar.stop()
        ctx.log("propagation: a sidecar polling once an hour, each change followed by a refresh")
        hourly = start_sidecar(
            ctx.workdir / "propagation" / "refreshed", bench_lab.front.url, lp.MASTER_KEY, poll_interval="3600"
        )
        try:
            with hourly.opencode() as opencode:
                provider_models(opencode, str(hourly.directory))
            refresh_took, refreshed, refresh_lost = _refreshed(ctx, bench_lab.front, hourly, changes, changes + 1)
        finally:
            hourly.stop()
    note = f"real LiteLLM behind a front whose list changes; SIDECAR_POLL_INTERVAL={POLL_INTERVAL:g}"
    if restarts:
        note += f"; opencode restarted {restarts} times"
    return [
        Row(
            "propagation",
            f"gateway list change -> prompt answered in opencode, {changes} changes",
            {"changes": changes, "not_propagated": lost, **distribution(answered)},
            note=note,
        ),
        Row(
            "propagation",
            f"gateway list change -> refresh -> prompt answered in opencode, {changes} changes",
            {"changes": changes, "not_propagated": refresh_lost, **distribution(refreshed)},
            note="SIDECAR_POLL_INTERVAL=3600; POST /v1/models/refresh right after each change",
        ),
        Row(
            "propagation",
            f"gateway list change -> refresh answered (applied), {changes} changes",
            {"changes": changes, "not_propagated": refresh_lost, **distribution(refresh_took)},
            note="the refresh answers once opencode's idle directories have the new list",
        ),
        Row(
            "propagation",
            f"gateway list change -> model listed by opencode, {changes} changes",
            {"changes": changes, "not_propagated": lost, **distribution(listed)},
            note=note,
        ),
        Row(
            "propagation",
            f"prompt answered, model already listed (the floor of the first row), {resolves} prompts",
            {"prompts": resolves, "failed": resolves - len(alone), **distribution(alone)},
        ),
        Row(
            "propagation",
            f"POST /v1/models/resolve, unlisted model, idle directory, {resolves} calls",
            {"calls": resolves, "failed": resolve_failed, "answered_after": usable, **distribution(resolved, "ms", 1000, 1)},
            note="answered_after: resolved models that then answered a prompt",
        ),
    ]


def reading(rows: list[Row]) -> str:
    """What the propagation figures are made of, from the rows themselves."""
    by_case = {row.case.split(",")[0]: row.figures for row in rows}
    answered = by_case.get("gateway list change -> prompt answered in opencode")
    listed = by_case.get("gateway list change -> model listed by opencode")
    alone = by_case.get("prompt answered")
    resolve = by_case.get("POST /v1/models/resolve")
    refreshed = by_case.get("gateway list change -> refresh -> prompt answered in opencode")
    refresh = by_case.get("gateway list change -> refresh answered (applied)")
    if not (answered and listed and alone and resolve) or answered["mean_s"] is None:
        return ""
    refresh_part = ""
    if refreshed and refresh and refreshed["mean_s"] is not None and refresh["mean_s"] is not None:
        refresh_part = (
            f" With a refresh after each change (a sidecar polling once an hour), the refresh answered "
            f"{refresh['mean_s']:.2f} s after the change on average, once opencode's idle directory had the list, "
            f"and the prompt {refreshed['mean_s']:.2f} s after it (p90 {refreshed['p90_s']:.2f} s): no poll to wait for."
        )
    return (
        f"A change waits for the next poll (uniform over the {POLL_INTERVAL:g} s interval here, "
        f"{POLL_INTERVAL / 2:g} s on average), then the sidecar fetches the list and `/model/info`, writes the "
        f"config and reloads the directory (`/instance/dispose`, a few ms); the first request after that rebuilds "
        f"opencode's instance for the directory, which is most of the rest: opencode listed the new model "
        f"{listed['mean_s']:.2f} s after the change on average (p90 {listed['p90_s']:.2f} s). A prompt then takes "
        f"{alone['p50_s']:.2f} s by itself (median, a model already listed, through LiteLLM's mock; the first prompt after a reload costs more), "
        f"and the answer came {answered['mean_s']:.2f} s after the change on average (p90 {answered['p90_s']:.2f} s, max "
        f"{answered['max_s']:.2f} s). Nothing waits for a poll with a resolve: the model is registered, written and "
        f"the idle directory reloaded at once, {resolve['p50_ms']:.0f} ms at the median, most of it the same "
        f"instance rebuild, confirmed through `/config/providers` before the answer."
    ) + refresh_part
