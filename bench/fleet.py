"""9. Fleet: one catalog hub and 1, 100 and 1,000 followers, against as many pods polling LiteLLM.

One sidecar in catalog-only mode (the hub: no opencode, the default 30 s poll interval,
SIDECAR_MAX_CONNECTIONS above the followers) follows a `Front` (bench/lab.py) whose list the
benchmark changes at will, over the real LiteLLM proxy of the serving benchmark (its wildcard route
lists about 200 models). The followers are long-polling clients of the hub's
`GET /v1/catalogs/<id>?wait=30` (bench/followers.py: raw asyncio streams in a thread of the bench
process, one keep-alive connection each), which is what a follower sidecar asks. Each change adds
a model to the front's list and is followed at once by `POST /v1/models/refresh` to the hub (as a
gateway's deploy pipeline would), so that the times measure the hub, not the wait for its next
poll; the clock runs from the change to the moment the last follower has read the new version.
The gateway's requests (`/v1/models` and `/model/info`) are counted at the front, the hub's CPU
time read from /proc.

The peer: the same number of pods each polling LiteLLM itself every 30 s (the default), compressed
honestly: each asks `/v1/models` and then `/model/info` once at a random moment of one 30 s window,
which is the steady-state rate of N/30 polls a second, straight at that LiteLLM.
"""

from __future__ import annotations

import os
import re
import time

import httpx

from bench.common import Context, Row, benchmark
from bench.followers import DirectPolls, Swarm, poll_directly
from bench.lab import Front, percentile
from bench.servers import WILDCARD, group_cpu_seconds, rss_mib, shared_litellm
from sidecar.http.connections import connections_that_fit, open_file_limits, raise_open_file_limit
from tests.support.sidecar_process import SidecarProcess, start_sidecar

# Held long-polls are connections of the hub's bound: above the largest fleet measured.
HUB_MAX_CONNECTIONS = 2000
# What a follower sidecar sends as ?wait=: its poll interval, the default.
WAIT = 30.0
POLL_INTERVAL = 30.0  # the direct pollers' (the sidecar's default), and the hub's own
# The sidecar's default gateway timeout: a direct poll slower than this is a failed poll.
GATEWAY_TIMEOUT = 10.0
GIVE_UP_AFTER = 30.0  # seconds one change may take to reach every follower
# One change this often (start to start), whatever the number of followers: the gateway's
# requests a minute while changing are then the same for every fleet unless followers add some.
CHANGE_EVERY = 1.0


def _catalog(api: httpx.Client) -> tuple[str, str | None]:
    """The hub's one gateway and the version it serves."""
    (entry,) = api.get("/v1/catalogs").raise_for_status().json()["data"]
    return entry["gateway"], entry["version"]


def _new_version(api: httpx.Client, old: str | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, version = _catalog(api)
        if version is not None and version != old:
            return version
        time.sleep(0.005)
    raise RuntimeError("the hub's version did not change after a refresh")


def _held(hub: SidecarProcess, gateway: str) -> int:
    """The long-polls the hub holds now, from its /metrics."""
    text = httpx.get(f"{hub.api_url}/metrics", timeout=10, trust_env=False).text
    found = re.search(rf'^opencode_sidecar_catalog_long_polls{{gateway="{re.escape(gateway)}"}} ([\d.e+]+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def _wait_held(hub: SidecarProcess, gateway: str, followers: int, timeout: float) -> bool:
    """Whether every follower's next request is held within `timeout`: a change is measured from a
    fleet at rest, as a real one is between changes minutes apart, not behind the last one's work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _held(hub, gateway) >= followers:
            return True
        time.sleep(0.05)
    return False


def _gateway_requests(front: Front) -> int:
    return front.list_requests + front.forwarded["/model/info"]


def _start_hub(ctx: Context, front: Front, master_key: str, key: str) -> SidecarProcess:
    fit = connections_that_fit(open_file_limits()[1])
    if fit < HUB_MAX_CONNECTIONS:
        raise RuntimeError(f"the open-file limit ({open_file_limits()[1]}) holds {fit} connections, below {HUB_MAX_CONNECTIONS}")
    return start_sidecar(
        ctx.workdir / "fleet" / "hub", front.url, master_key,
        catalog_only="true", api_key=key, max_connections=str(HUB_MAX_CONNECTIONS),
        # As an operator runs it: the default poll interval, retries, timeout and log level.
        poll_interval=None, gateway_retries=None, gateway_timeout=None, log_level=None,
        # No opencode in catalog-only mode.
        opencode_port=None, opencode_password=None, opencode_bin=None, opencode_directory=None,
    )


def _change(
    ctx: Context, front: Front, hub: SidecarProcess, api: httpx.Client, swarm: Swarm, gateway: str, version: str, changes: int
) -> tuple[list[float], list[float], int]:
    """`changes` models added one by one, each followed by a refresh of the hub: the times from each
    change to the first and to the last follower knowing it, and how many never reached them all."""
    first: list[float] = []
    last: list[float] = []
    lost = 0
    started = time.monotonic()
    for i in range(1, changes + 1):
        time.sleep(max(0.0, started + (i - 1) * CHANGE_EVERY - time.monotonic()))
        changed = front.set_models([*front.models, f"openai/fleet-{swarm.count}-{i}"])
        api.post("/v1/models/refresh").raise_for_status()
        version = _new_version(api, version, GIVE_UP_AFTER)
        if not swarm.wait_all(version, GIVE_UP_AFTER):
            lost += 1
            ctx.log(f"fleet: change {i} reached {len(swarm.arrivals(version))} of {swarm.count} followers")
            continue
        arrivals = swarm.arrivals(version)
        first.append(min(arrivals) - changed)
        last.append(max(arrivals) - changed)
        if not _wait_held(hub, gateway, swarm.count, GIVE_UP_AFTER):
            ctx.log(f"fleet: after change {i} the hub holds {_held(hub, gateway)} of {swarm.count} long-polls")
    return first, last, lost


def _follow(ctx: Context, front: Front, hub: SidecarProcess, key: str, followers: int, changes: int) -> Row:
    quiet = 1.0 if ctx.small else 3.0
    with httpx.Client(base_url=hub.api_url, headers={"x-api-key": key}, timeout=60, trust_env=False) as api:
        gateway, version = _catalog(api)
        assert version is not None
        started = time.monotonic()
        swarm = Swarm(hub.api_url, gateway, key, followers, WAIT).start()
        try:
            if not swarm.wait_all(version, 60):
                raise RuntimeError(f"{len(swarm.arrivals(version))} of {followers} followers got the list: {dict(swarm.errors)}")
            if not _wait_held(hub, gateway, followers, GIVE_UP_AFTER):
                raise RuntimeError(f"the hub holds {_held(hub, gateway)} of {followers} long-polls")
            cpu = group_cpu_seconds(hub.process.pid)
            time.sleep(quiet)
            held_cpu = group_cpu_seconds(hub.process.pid) - cpu
            rss = rss_mib(hub.process.pid)
            requests = _gateway_requests(front)
            cpu, changes_started = group_cpu_seconds(hub.process.pid), time.monotonic()
            first, last, lost = _change(ctx, front, hub, api, swarm, gateway, version, changes)
            time.sleep(max(0.0, changes_started + changes * CHANGE_EVERY - time.monotonic()))
            changes_cpu = group_cpu_seconds(hub.process.pid) - cpu
            changes_s = time.monotonic() - changes_started
            requests = _gateway_requests(front) - requests
            rss = max(rss, rss_mib(hub.process.pid))
        finally:
            swarm.stop()
        phase = time.monotonic() - started
    fanout = [a - b for a, b in zip(last, first, strict=True)]

    def ms(values: list[float], p: float) -> float | None:
        return round(percentile(values, p) * 1000, 1) if values else None

    return Row(
        "fleet",
        f"hub, {_count(followers, 'follower')}, {changes} changes",
        {
            "followers": followers,
            "not_propagated": lost,
            "change_to_last_p50_ms": ms(last, 0.5),
            "change_to_last_p99_ms": ms(last, 0.99),
            "change_to_first_p50_ms": ms(first, 0.5),
            "fanout_p50_ms": ms(fanout, 0.5),
            "fanout_p99_ms": ms(fanout, 0.99),
            "gateway_requests": requests,
            "gateway_req_per_min": round(requests / changes_s * 60, 1),
            "hub_cpu_ms_per_change": round(1000 * changes_cpu / changes, 1),
            "hub_cpu_pct_changing": round(100 * changes_cpu / changes_s, 1),
            "hub_cpu_pct_held": round(100 * held_cpu / quiet, 2),
            "hub_rss_mib": round(rss, 1),
            "follower_errors": sum(swarm.errors.values()),
        },
        peer=f"{_count(followers, 'pod')} polling LiteLLM every {POLL_INTERVAL:g} s",
        note=(f"{phase:.0f} s; a change every {CHANGE_EVERY:g} s, each followed by a refresh; hub polls every "
              f"{POLL_INTERVAL:g} s; ?wait={WAIT:g}"),
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _direct_row(result: DirectPolls) -> Row:
    seconds = result.seconds
    return Row(
        "fleet",
        f"direct, {_count(result.pollers, 'pod')} polling LiteLLM every {POLL_INTERVAL:g} s",
        {
            "pods": result.pollers,
            "requests": result.requests,
            "req_per_min": round(result.requests / result.window_s * 60, 1),
            "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
            "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
            "max_ms": round(max(seconds) * 1000, 1),
            "errors": sum(result.errors.values()),
        },
        note=(f"one poll each within {result.window_s:g} s; timeout {GATEWAY_TIMEOUT:g} s (the sidecar's default)"
              + (f"; errors: {dict(result.errors)}" if result.errors else "")),
    )


@benchmark("fleet")
def run(ctx: Context) -> list[Row]:
    sizes = (1, 10) if ctx.small else (1, 100, 1000)
    changes = 3 if ctx.small else 15
    window = 1.0 if ctx.small else POLL_INTERVAL
    raise_open_file_limit()  # the followers' connections are the bench's files
    key = "bench-hub-" + os.urandom(16).hex()
    hub_rows, direct_rows = [], []
    # The serving benchmark's LiteLLM: its wildcard route lists about 200 models.
    proxy = shared_litellm(ctx, "wildcard", WILDCARD)
    front = Front(proxy.url, ["openai/fleet-0"])
    try:
        hub = _start_hub(ctx, front, proxy.master_key, key)
        try:
            for followers in sizes:
                ctx.log(f"fleet: {followers} followers of the hub, {changes} changes")
                hub_rows.append(_follow(ctx, front, hub, key, followers, changes))
        finally:
            hub.stop()
    finally:
        front.close()
    for pods in sizes:
        ctx.log(f"fleet: {pods} pods polling LiteLLM directly within {window:g} s")
        result = poll_directly(proxy.url, proxy.master_key, pods, window, GATEWAY_TIMEOUT)
        direct_rows.append(_direct_row(result))
    return hub_rows + direct_rows


def reading(rows: list[Row]) -> str:
    hubs = [row for row in rows if row.case.startswith("hub")]
    directs = [row for row in rows if row.case.startswith("direct")]
    if not hubs or not directs:
        return ""
    big, peer = hubs[-1].figures, directs[-1].figures
    requests = ", ".join(f"{int(row.number('gateway_requests'))}" for row in hubs)
    sizes = ", ".join(f"{int(row.number('followers')):,}" for row in hubs)
    changes = hubs[0].case.rsplit(", ", 1)[1]
    return (
        f"The gateway saw the same requests whatever the number of followers: {requests} "
        f"(`/v1/models` and `/model/info`) over {changes} with {sizes} followers, that is one fetch per refresh "
        f"and the hub's own polls; at rest the hub polls every {POLL_INTERVAL:g} s, 4 requests a minute per "
        f"replica, as much as one pod polling alone. {int(peer['pods'] or 0):,} pods polling LiteLLM themselves "
        f"ask it {int(peer['pods'] or 0) * 2 * 60 / POLL_INTERVAL:,.0f} times a minute ({float(peer['req_per_min'] or 0):,.0f} "
        f"sent here: a poll whose `/v1/models` failed asks no `/model/info`); it answered them in "
        f"{float(peer['p50_ms'] or 0):,.0f} ms at the median and {float(peer['p99_ms'] or 0):,.0f} ms at p99, with "
        f"{peer['errors']} failed requests (a timeout is {GATEWAY_TIMEOUT:g} s, the sidecar's default). With "
        f"{int(big['followers'] or 0):,} followers the last knew a change {float(big['change_to_last_p50_ms'] or 0):,.0f} ms "
        f"after it at the median (p99 {float(big['change_to_last_p99_ms'] or 0):,.0f} ms): the first knew it after "
        f"{float(big['change_to_first_p50_ms'] or 0):,.0f} ms (the hub's fetch of the list, LiteLLM's `/model/info` "
        f"through the lab's front, and one serialisation), and the held answers went out to all of them in "
        f"{float(big['fanout_p50_ms'] or 0):,.0f} ms (first to last; p99 {float(big['fanout_p99_ms'] or 0):,.0f} ms), "
        f"the followers' own reading in the bench's process on the same two cores included. Holding their "
        f"long-polls cost the hub {float(big['hub_cpu_pct_held'] or 0):.2f} % of a core; each change "
        f"{float(big['hub_cpu_ms_per_change'] or 0):,.0f} ms of CPU, about "
        f"{float(big['hub_cpu_ms_per_change'] or 0) / max(1, int(big['followers'] or 1)):.2f} ms a follower (its answer, "
        f"then its next request taken and held; the bench's reads of /metrics included), which is where a bigger "
        f"fleet's time goes; its memory was {float(big['hub_rss_mib'] or 0):.0f} MiB "
        f"({float(hubs[0].figures['hub_rss_mib'] or 0):.0f} with one follower). "
        f"Without a refresh a change waits for the hub's next poll ({POLL_INTERVAL / 2:g} s on average at the "
        f"default interval) and then reaches the followers as fast."
    )
