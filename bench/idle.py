"""5. Idle cost: the sidecar's CPU time and memory while nothing changes.

A sidecar with its default settings (a poll every 30 s, a health check of opencode every 5 s,
info-level logs) follows the two-model LiteLLM proxy, whose list does not change. Once it is
ready and has settled (15 s), its CPU time (utime + stime from /proc/PID/stat) and VmRSS are sampled
every second for 5 minutes; opencode's process group, idle beside it, is sampled the same way
as the peer. The polls made meanwhile are read from the sidecar's /metrics afterwards.
"""

from __future__ import annotations

import re
import time

import httpx

from bench.common import Context, Row, benchmark
from bench.servers import TWO_MODELS, cpu_seconds, group_cpu_seconds, rss_mib, shared_litellm
from tests.support.sidecar_process import start_sidecar

# After /readyz, opencode still settles (its start-up's garbage collected, its caches warm).
SETTLE_SMALL, SETTLE = 3.0, 15.0


def _polls(api_url: str) -> int:
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
    return int(sum(float(n) for n in re.findall(r"^opencode_sidecar_gateway_polls_total\{[^}]*\} ([\d.e+]+)$", text, re.M)))


@benchmark("idle")
def run(ctx: Context) -> list[Row]:
    window = 10.0 if ctx.small else 300.0
    # The default interval, as an operator runs it; the quick mode still sees several polls.
    poll_interval = "2" if ctx.small else None
    proxy = shared_litellm(ctx, "2", TWO_MODELS)
    ctx.log(f"idle: a sidecar over an unchanged list for {window:.0f} s")
    sidecar = start_sidecar(
        ctx.workdir / "idle",
        proxy.url,
        proxy.master_key,
        poll_interval=poll_interval,
        log_level=None,
        gateway_retries=None,
        gateway_timeout=None,
        restart_backoff_initial=None,
        restart_backoff_max=None,
    )
    try:
        time.sleep(SETTLE_SMALL if ctx.small else SETTLE)
        pid, opencode = sidecar.process.pid, sidecar.opencode_pid()
        polls_before = _polls(sidecar.api_url)
        cpu_start, opencode_start = cpu_seconds(pid), group_cpu_seconds(opencode)
        rss = [rss_mib(pid)]
        opencode_rss = [rss_mib(opencode)]
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < window:
            time.sleep(min(1.0, window - elapsed))
            rss.append(rss_mib(pid))
            opencode_rss.append(rss_mib(opencode))
        wall = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_start
        opencode_cpu = group_cpu_seconds(opencode) - opencode_start
        polls = _polls(sidecar.api_url) - polls_before
    finally:
        sidecar.stop()
    interval = float(poll_interval or 30)
    return [
        Row(
            "idle",
            f"sidecar, {wall:.0f} s, poll every {interval:.0f} s",
            {
                "seconds": round(wall, 1),
                "polls": polls,
                "cpu_s": round(cpu, 3),
                "cpu_pct": round(100 * cpu / wall, 3),
                "cpu_ms_per_poll": round(1000 * cpu / polls, 1) if polls else 0.0,
                "rss_start_mib": round(rss[0], 1),
                "rss_end_mib": round(rss[-1], 1),
                "rss_max_mib": round(max(rss), 1),
            },
            peer="opencode serve, idle beside it",
            ratio=round(cpu / opencode_cpu, 2) if opencode_cpu else None,
            note="ratio: CPU seconds, sidecar / opencode; cpu_ms_per_poll counts all idle work (health checks too)",
        ),
        Row(
            "idle",
            f"opencode serve, {wall:.0f} s",
            {
                "seconds": round(wall, 1),
                "cpu_s": round(opencode_cpu, 3),
                "cpu_pct": round(100 * opencode_cpu / wall, 3),
                "rss_start_mib": round(opencode_rss[0], 1),
                "rss_end_mib": round(opencode_rss[-1], 1),
                "rss_max_mib": round(max(opencode_rss), 1),
            },
            note="CPU of its whole process group, RSS of its main process; the peer",
        ),
    ]


def reading(rows: list[Row]) -> str:
    ours = next((row for row in rows if row.case.startswith("sidecar")), None)
    peer = next((row for row in rows if row.case.startswith("opencode")), None)
    if ours is None or peer is None:
        return ""
    f, p = ours.figures, peer.figures
    grew = float(f["rss_end_mib"] or 0) - float(f["rss_start_mib"] or 0)
    return (
        f"Idle, the sidecar used {float(f['cpu_s'] or 0):.2f} s of CPU in {float(f['seconds'] or 0):.0f} s "
        f"({float(f['cpu_pct'] or 0):.2f} % of one core) for {f['polls']} polls, about {float(f['cpu_ms_per_poll'] or 0):.0f} ms "
        f"per poll counting everything else it does meanwhile (a health check of opencode every 5 s, its watch "
        f"on opencode's event stream). Each poll is two HTTP requests to LiteLLM (/v1/models and /model/info), "
        f"parsing and a fingerprint compare; an unchanged list writes nothing. opencode beside it used "
        f"{float(p['cpu_s'] or 0):.2f} s ({float(p['cpu_pct'] or 0):.2f} %). The sidecar's memory went from "
        f"{float(f['rss_start_mib'] or 0):.0f} to {float(f['rss_end_mib'] or 0):.0f} MiB ({grew:+.1f} MiB), which is the "
        f"interpreter with its imports (pydantic, httpx, starlette, uvicorn, structlog, prometheus-client) more than "
        f"any data; opencode holds {float(p['rss_max_mib'] or 0):.0f} MiB."
    )
