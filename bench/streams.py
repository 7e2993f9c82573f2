"""Event streams: other requests while 100 and 1,000 `GET /event` streams are held open.

One sidecar over LiteLLM (two models) and its opencode. For each count of streams (none, then
100 and 1,000; 10 in small mode) the streams are opened and held, unread, from their own sockets,
and meanwhile the load generator loads `GET /session` (opencode's list of sessions, forwarded):
first all through the sidecar, then all straight to the same opencode with its password, the peer.
The figures are the other requests' rate and p50/p99 while the streams are open, and the sidecar's
resident memory then. Before issue 13, 100 streams through the sidecar took every connection to
opencode and these requests failed after 30 s.
"""

from __future__ import annotations

import base64
import socket
from urllib.parse import urlsplit

from bench.common import Context, Row, benchmark
from bench.loadgen import LoadResult, run_load
from bench.servers import TWO_MODELS, rss_mib, shared_litellm
from tests.support.sidecar_process import start_sidecar

LOAD_CONNECTIONS = 4
STREAM_TIMEOUT = 60.0


def open_streams(base_url: str, count: int, headers: dict[str, str] | None = None) -> list[socket.socket]:
    """`count` event streams, each on a socket of its own, answered 200 and then left unread."""
    url = urlsplit(base_url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = f"GET /event HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((url.hostname, url.port), timeout=STREAM_TIMEOUT)
            opened.append(sock)
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError(f"stream {len(opened)} closed before its answer")
                head += chunk
            status = head.split(b" ", 2)[1]
            if status != b"200":
                raise RuntimeError(f"stream {len(opened)} answered {status.decode()}: {head[:300]!r}")
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(streams: list[socket.socket]) -> None:
    for sock in streams:
        sock.close()


def _figures(result: LoadResult, streams: int) -> dict[str, float | int | str | None]:
    return {
        "streams": streams,
        "c": result.connections,
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "errors": result.errors,
    }


@benchmark("streams")
def run(ctx: Context) -> list[Row]:
    counts = (0, 10) if ctx.small else (0, 100, 1000)
    seconds = 1.0 if ctx.small else 5.0
    proxy = shared_litellm(ctx, "2", TWO_MODELS)
    most = max(counts)
    ctx.log("streams: starting a sidecar over LiteLLM (2 models)")
    sidecar = start_sidecar(
        ctx.workdir / "streams",
        proxy.url,
        proxy.master_key,
        poll_interval="3600",
        log_level="info",
        max_streams=str(most + 10),
        max_streams_per_client=str(most + 10),
        # Each stream is a connection to the API: room for all of them and for the load.
        max_connections=str(most + 200),
    )
    rows: list[Row] = []
    basic = base64.b64encode(f"opencode:{sidecar.password}".encode()).decode()
    direct = {"Authorization": f"Basic {basic}"}
    try:
        for count in counts:
            ctx.log(f"streams: {count} streams through the sidecar")
            held = open_streams(sidecar.api_url, count)
            try:
                ours = run_load(f"{sidecar.api_url}/session", connections=LOAD_CONNECTIONS, seconds=seconds)
                rss = rss_mib(sidecar.process.pid)
            finally:
                close_all(held)
            ctx.log(f"streams: {count} streams straight to opencode")
            held = open_streams(sidecar.opencode_url, count, direct)
            try:
                peer = run_load(
                    f"{sidecar.opencode_url}/session", connections=LOAD_CONNECTIONS, seconds=seconds, headers=direct
                )
            finally:
                close_all(held)
            rows.append(
                Row(
                    "streams",
                    f"sidecar GET /session, {count} event streams open",
                    {**_figures(ours, count), "sidecar_rss_mib": round(rss, 1)},
                    peer="opencode GET /session, as many streams straight to it",
                    ratio=round(ours.p99_ms / peer.p99_ms, 2) if peer.p99_ms else None,
                    note=f"load: {ours.tool}; ratio is p99 ours / peer's",
                )
            )
            rows.append(
                Row(
                    "streams",
                    f"opencode GET /session, {count} event streams open",
                    _figures(peer, count),
                    note=f"load: {peer.tool}; the peer, no sidecar",
                )
            )
    finally:
        sidecar.stop()
    return rows


def reading(rows: list[Row]) -> str:
    ours = [row for row in rows if row.case.startswith("sidecar")]
    peers = [row for row in rows if row.case.startswith("opencode")]
    if not ours or not peers:
        return ""
    most = max(ours, key=lambda row: row.number("streams"))
    idle = min(ours, key=lambda row: row.number("streams"))
    peer_most = max(peers, key=lambda row: row.number("streams"))
    errors = sum(int(row.number("errors")) for row in ours)
    return (
        f"With {int(most.number('streams')):,} event streams held open through the sidecar, other requests were "
        f"answered at p50 {most.number('p50_ms'):.1f} ms and p99 {most.number('p99_ms'):.1f} ms (with none open: "
        f"{idle.number('p50_ms'):.1f} / {idle.number('p99_ms'):.1f} ms), with {errors} errors in all; straight to "
        f"opencode with as many streams, {peer_most.number('p50_ms'):.1f} / {peer_most.number('p99_ms'):.1f} ms. "
        "Streams have connections to opencode of their own, so ordinary requests never wait for one of theirs; what "
        "is left is the sidecar's one event loop passing each stream's heartbeats on and opencode's own cost per "
        f"subscriber. The sidecar's resident memory with {int(most.number('streams')):,} streams open was "
        f"{most.number('sidecar_rss_mib'):.0f} MiB."
    )
