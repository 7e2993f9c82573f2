"""An opencode the sidecar did not start (attach mode): it is only watched, never started,
restarted or stopped; it reads the config file the sidecar writes through its own OPENCODE_CONFIG."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from sidecar.opencode.client import OpencodeClient
from sidecar.opencode.handle import Clock, Sleep

log = structlog.get_logger("sidecar.opencode")


class AttachedOpencode:
    """An OpencodeHandle: `healthy`, `generation`, `wait_healthy()`, `report()`. Each time opencode
    answers again after being down counts as a new generation: whoever restarted it, the new
    process read the config file as it started."""

    pid = None

    def __init__(
        self,
        client: OpencodeClient,
        *,
        health_interval: float,
        health_failures: int,
        sleep: Sleep = anyio.sleep,
        wall: Clock = time.time,
        on_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._url = client.base_url
        self._health_interval = health_interval
        self._health_failures = health_failures
        self._on_up = on_up
        self._sleep = sleep
        self._wall = wall
        self._healthy_event = anyio.Event()
        self.healthy = False
        self.generation = 0
        self.restarts = 0  # times it came back after being seen down
        self.healthy_since: float | None = None  # wall-clock time
        self.state = "waiting"

    async def wait_healthy(self) -> None:
        while not self.healthy:
            await self._healthy_event.wait()

    def request_restart(self) -> None:
        # Settings refuse SIDECAR_RELOAD=restart in attach mode; nothing asks for this.
        log.warning("opencode.restart_not_ours", url=self._url)

    def report(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "attached": self._url,
            "pid": None,
            "healthy": self.healthy,
            "uptime": round(self._wall() - self.healthy_since, 3) if self.healthy and self.healthy_since else None,
            "restarts": self.restarts,
            "consecutive_crashes": 0,
            "backoff_until": None,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow opencode's health until cancelled. Starts at once: in a pod, opencode starts
        only after the sidecar has written the config it reads."""
        task_status.started()
        failures = 0
        while True:
            if await self._client.healthy():
                failures = 0
                if not self.healthy:
                    if self._on_up is not None:
                        await self._on_up()
                    self._up()
            elif self.healthy:
                failures += 1
                log.warning("opencode.health_check_failed", failures=failures, limit=self._health_failures)
                if failures >= self._health_failures:
                    self._down()
            interval = self._health_interval if self.healthy else min(1.0, self._health_interval)
            await self._sleep(interval)

    def _up(self) -> None:
        if self.generation:
            self.restarts += 1
        self.generation += 1
        self.healthy, self.state, self.healthy_since = True, "running", self._wall()
        self._healthy_event.set()
        log.info("opencode.attached", url=self._url, generation=self.generation)

    def _down(self) -> None:
        self.healthy, self.state = False, "down"
        self._healthy_event = anyio.Event()
        log.warning("opencode.unreachable", url=self._url)

    async def stop(self) -> None:
        """Nothing to stop: opencode belongs to whoever started it."""
