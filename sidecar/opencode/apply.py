"""Apply a rewritten config to the running opencode without aborting a prompt.

opencode reads its config when it builds the instance for a directory, and every way of making
it read again aborts the prompts generating in the directories it drops. So each directory is
dropped (`/instance/dispose`) at once when it is idle, and a busy one as soon as it goes idle.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from sidecar.naming import ModelRef
from sidecar.opencode.child import OpencodeChild
from sidecar.opencode.client import OpencodeClient, OpencodeError
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.apply")

# An abort this soon after a reload of its directory is counted as the reload's doing.
ABORT_WINDOW = 10.0
# How often the applier looks again when nothing woke it: busy directories, a restarted child.
RECHECK_INTERVAL = 1.0
CONFIRM_ATTEMPTS = 5


def _aborted(event: dict[str, Any]) -> bool:
    payload = event.get("payload")
    properties = payload.get("properties") if isinstance(payload, dict) else None
    error = properties.get("error") if isinstance(properties, dict) else None
    return isinstance(error, dict) and error.get("name") == "MessageAbortedError"


def event_directory_and_type(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """`/global/event` wraps each directory's event as `{"directory": D, "payload": {"type": ...}}`."""
    directory = event.get("directory")
    # Only real project paths: opencode also tags events with markers such as "global".
    if not isinstance(directory, str) or not os.path.isabs(directory):
        directory = None
    payload = event.get("payload")
    kind = payload.get("type") if isinstance(payload, dict) else event.get("type")
    return directory, kind if isinstance(kind, str) else None


class Applier:
    """The one task that reloads opencode; the reconciler tells it what it has written."""

    def __init__(
        self,
        settings: Settings,
        client: OpencodeClient,
        child: OpencodeChild,
        default_directory: Path,
        *,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        self._settings = settings
        self._recheck = recheck_interval
        self._client = client
        self._child = child
        self.default_directory = str(default_directory)
        self.directories: set[str] = {self.default_directory}
        self._expected: dict[str, set[str]] = {}
        self.version = 0  # of the config written
        self.applied_version = 0  # confirmed in opencode
        self._pending: set[str] = set()
        self._deferred: set[str] = set()  # busy directories already logged for this version
        self._unverified: set[str] = set()
        self._confirmed_generation = 0
        self._mismatches = 0
        self._wake = anyio.Event()
        # For /metrics: reloads by result, and prompts aborted right after a reload (should stay 0).
        self.reloads: Counter[str] = Counter()
        self.prompts_aborted_by_reload = 0
        self._disposed_at: dict[str, float] = {}

    @property
    def applied(self) -> bool:
        return (
            self.version > 0
            and self.applied_version == self.version
            and self._confirmed_generation == self._child.generation
        )

    def config_written(self, expected: dict[str, set[str]]) -> None:
        """A new config is on disk; opencode must end up listing exactly these models per provider."""
        self.version += 1
        self._expected = expected
        self._pending = set(self.directories)
        self._deferred: set[str] = set()
        self._mismatches = 0
        self._wake.set()

    def note_event(self, event: dict[str, Any]) -> None:
        directory, kind = event_directory_and_type(event)
        if directory is None:
            return
        if kind == "session.error" and _aborted(event):
            disposed = self._disposed_at.get(directory)
            if disposed is not None and time.monotonic() - disposed < ABORT_WINDOW:
                # What this sidecar exists to prevent: say it loudly.
                self.prompts_aborted_by_reload += 1
                log.error("opencode.prompt_aborted_by_reload", directory=directory)
        self.note_directory(directory)
        if directory in self._pending and kind in {"session.idle", "session.status"}:
            self._wake.set()

    def note_directory(self, directory: str) -> None:
        """A directory opencode may have loaded: from its events, or a request the pass-through
        forwarded there. opencode announces no instance loads, so one first seen now may have read
        an older file: it is checked, and reloaded when idle if it is stale."""
        if directory not in self.directories and os.path.isabs(directory):
            self.directories.add(directory)
            self._unverified.add(directory)
            self._wake.set()

    def adopt_default_directory(self, directory: str) -> None:
        """The directory opencode itself runs in (attach mode learns it from opencode)."""
        if directory != self.default_directory:
            self.directories.discard(self.default_directory)
            self._pending.discard(self.default_directory)
            self.default_directory = directory
            self.directories.add(directory)
            log.info("opencode.default_directory", directory=directory)

    def report(self) -> dict[str, Any]:
        """The config versions written and applied, and the directories still to reload."""
        return {
            "config_version": self.version,
            "applied_version": self.applied_version,
            "applied": self.applied,
            "directories": len(self.directories),
            "pending_reloads": sorted(self._pending),
            "waiting_for_idle": sorted(self._deferred & self._pending),
        }

    def _differs(self, listed: dict[str, set[str]]) -> bool:
        """Whether a directory's providers differ from what the written config holds."""
        return any(listed.get(provider, set()) != models for provider, models in self._expected.items())

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        """Wait until `directory` lists `ref`: at once when it is idle, after its prompts
        finish when it is busy; False after `timeout`. Never reloads under a generating prompt."""
        with anyio.move_on_after(timeout):
            while True:
                await self._child.wait_healthy()
                if directory not in self._pending:
                    try:
                        # Builds the directory's instance from the current file if it has none.
                        listed = await self._client.provider_model_ids(directory)
                    except (OpencodeError, httpx.HTTPError) as exc:
                        log.warning("opencode.check_failed", directory=directory, error=str(exc) or type(exc).__name__)
                        listed = None
                    if listed is not None and ref.model_id in listed.get(ref.provider_id, set()):
                        return True
                    if listed is not None:
                        # Loaded from an older file without our hearing of it: reload it when idle.
                        self.directories.add(directory)
                        self._pending.add(directory)
                        self._wake.set()
                await anyio.sleep(0.05)
        return False

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow_events)
            seen_generation = 0
            while True:
                await self._child.wait_healthy()
                generation = self._child.generation
                if generation != seen_generation:
                    # A new process read the file as it started: nothing to reload, only to check.
                    seen_generation = generation
                    self._pending = set()
                try:
                    if self._unverified and self.version:
                        await self._verify_new_directories()
                    if self._pending:
                        await self._reload_pending(generation)
                    if self.version and not self.applied:
                        # A restart-mode reload has started a new process meanwhile.
                        await self._confirm_where_reloaded(self._child.generation)
                except (OpencodeError, httpx.HTTPError) as exc:
                    log.warning("opencode.reload_failed", error=str(exc) or type(exc).__name__)
                # Woken by a new config or an idle event; the timeout also notices a new process.
                with anyio.move_on_after(self._recheck):
                    await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        await self._wake.wait()
        self._wake = anyio.Event()

    async def _reload_pending(self, generation: int) -> None:
        if self._settings.reload == "restart":
            await self._restart_when_idle(generation)
            return
        for directory in sorted(self._pending):
            try:
                busy = await self._client.busy_sessions(directory)
                if busy:
                    if directory not in self._deferred:
                        self.reloads["deferred"] += 1
                        self._deferred.add(directory)
                        log.info("opencode.reload_deferred", directory=directory, busy_sessions=len(busy))
                    continue
                await self._client.dispose(directory)
            except (OpencodeError, httpx.HTTPError) as exc:
                self.reloads["failed"] += 1
                log.warning("opencode.reload_failed", directory=directory, error=str(exc) or type(exc).__name__)
                continue
            self.reloads["reloaded"] += 1
            self._disposed_at[directory] = time.monotonic()
            self._pending.discard(directory)
            log.info("opencode.reloaded", directory=directory, version=self.version)

    async def _verify_new_directories(self) -> None:
        """A directory first seen now gets reloaded (when idle) if it lists other models."""
        for directory in sorted(self._unverified):
            self._unverified.discard(directory)
            if directory in self._pending:
                continue
            listed = await self._client.provider_model_ids(directory)
            if self._differs(listed):
                log.info("opencode.stale_directory", directory=directory, version=self.version)
                self._pending.add(directory)

    async def _confirm_where_reloaded(self, generation: int) -> None:
        """Check in a directory that already reads the new file; busy ones may still lag."""
        current = self.directories - self._pending
        if not current:
            return
        directory = self.default_directory if self.default_directory in current else min(current)
        await self._confirm(generation, directory)

    async def _restart_when_idle(self, generation: int) -> None:
        with anyio.move_on_after(self._settings.reload_timeout) as scope:
            while True:
                busy = 0
                for directory in sorted(self.directories):
                    busy += len(await self._client.busy_sessions(directory))
                if not busy:
                    break
                log.info("opencode.restart_deferred", busy_sessions=busy)
                await anyio.sleep(self._recheck)
        if scope.cancelled_caught:
            log.warning("opencode.restart_forced", waited=self._settings.reload_timeout)
        self._pending = set()
        self.reloads["restarted"] += 1
        self._child.request_restart()
        while self._child.generation == generation:
            await anyio.sleep(0.05)

    async def _confirm(self, generation: int, directory: str) -> None:
        """Check that opencode lists exactly the rendered models; on a mismatch, reload again
        (through the idle-aware path, never under a generating prompt), a bounded number of times."""
        version, expected = self.version, self._expected
        if self._mismatches >= CONFIRM_ATTEMPTS:
            return
        listed = await self._client.provider_model_ids(directory)
        if not self._differs(listed):
            self.applied_version = version
            self._confirmed_generation = generation
            models = sum(len(ids) for ids in expected.values())
            log.info("opencode.applied", version=version, models=models, directory=directory)
            return
        self._mismatches += 1
        missing = [f"{p}/{m}" for p, ids in expected.items() for m in sorted(ids - listed.get(p, set()))]
        unexpected = [f"{p}/{m}" for p, ids in expected.items() for m in sorted(listed.get(p, set()) - ids)]
        log.warning(
            "opencode.apply_mismatch",
            directory=directory,
            missing=missing[:20],
            unexpected=unexpected[:20],
            attempt=self._mismatches,
        )
        if self._mismatches >= CONFIRM_ATTEMPTS:
            log.error("opencode.apply_failed", version=version, directory=directory)
        else:
            self._pending.add(directory)

    async def _follow_events(self) -> None:
        """Learn which directories opencode has loaded, and when their sessions go idle."""
        while True:
            await self._child.wait_healthy()
            try:
                async for event in self._client.global_events():
                    self.note_event(event)
            except (OpencodeError, httpx.HTTPError) as exc:
                log.debug("opencode.events_reconnect", error=str(exc) or type(exc).__name__)
            await anyio.sleep(0.2)

