"""Restart mode (SIDECAR_RELOAD=restart) replaces the whole process, which aborts every prompt:
it waits until no directory is generating, for at most SIDECAR_RELOAD_TIMEOUT."""

from __future__ import annotations

import anyio
import structlog

from sidecar.opencode.client import OpencodeClient
from sidecar.opencode.handle import Sleep
from sidecar.opencode.tracked import DIRECTORY_ERRORS, TrackedDirectories

log = structlog.get_logger("sidecar.apply")


async def until_idle(
    client: OpencodeClient, directories: TrackedDirectories, *, timeout: float, recheck: float, sleep: Sleep
) -> None:
    """Return once no directory has a busy session (asking every `recheck` seconds), or after
    `timeout` whatever still runs. A directory opencode answers errors for counts as idle."""
    with anyio.move_on_after(timeout) as scope:
        while True:
            busy = 0
            for directory in sorted(directories.names):
                if not directories.due(directory):
                    continue
                try:
                    busy += len(await client.busy_sessions(directory))
                except DIRECTORY_ERRORS as exc:
                    directories.failed(directory, exc, "restart")
            if not busy:
                break
            log.info("opencode.restart_deferred", busy_sessions=busy)
            await sleep(recheck)
    if scope.cancelled_caught:
        log.warning("opencode.restart_forced", waited=timeout)
