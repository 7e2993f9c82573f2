"""A refresh on demand (POST /v1/models/refresh, `opencode-sidecar refresh`): poll now, and answer
once what changed is applied to every idle directory, with what changed.

A gateway's deploy pipeline calls it after adding a model, so that the model is usable at once
rather than after the next poll. Refreshes arriving together share one poll per gateway (polls.py).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import structlog

from sidecar.errors import HttpError
from sidecar.polls import PollResult

log = structlog.get_logger("sidecar.refresh")


class Polls(Protocol):
    @property
    def gateways(self) -> dict[str, Any]: ...

    async def refresh(self, gateway_id: str) -> PollResult: ...


class Applied(Protocol):
    async def settled(self, timeout: float) -> bool: ...

    def report(self) -> dict[str, Any]: ...


class Refresh:
    def __init__(self, polls: Polls, applier: Applied, *, apply_timeout: float) -> None:
        self._polls = polls
        self._applier = applier
        self._apply_timeout = apply_timeout

    async def refresh(self, gateway_id: str | None) -> dict[str, Any]:
        known = list(self._polls.gateways)
        if gateway_id is not None and gateway_id not in known:
            raise HttpError(404, f"no gateway {gateway_id!r} here; this sidecar's gateways: {', '.join(known)}")
        results: dict[str, PollResult] = {}

        async def poll(one: str) -> None:
            results[one] = await self._polls.refresh(one)

        async with anyio.create_task_group() as group:
            for one in [gateway_id] if gateway_id is not None else known:
                group.start_soon(poll, one)
        # Every directory reloaded that can be: a directory with a prompt running is reloaded when
        # it ends (never under it), and is named in the answer.
        applied = await self._applier.settled(self._apply_timeout)
        report = self._applier.report()
        ordered = [results[one] for one in known if one in results]
        log.info(
            "models.refreshed",
            gateways=[result.gateway for result in ordered],
            changed=[result.gateway for result in ordered if result.changed],
            applied=applied,
        )
        return {
            "gateways": [result.report() for result in ordered],
            "applied": applied,
            "waiting_for_idle": report["waiting_for_idle"],
        }
