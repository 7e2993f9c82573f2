"""Apply a rewritten config to the running opencode without aborting a prompt.

opencode reads its config when it builds the instance for a directory, and every way of making
it read again aborts the prompts generating in the directories it drops. So each directory is
dropped (`/instance/dispose`) at once when it is idle, and a busy one as soon as it goes idle.

The directories come from clients and from opencode's events, so the set is bounded
(SIDECAR_MAX_DIRECTORIES, the least recently used dropped first) and a directory opencode keeps
answering errors for is retried with backoff, then dropped.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import structlog

from sidecar.backoff import restart_delay
from sidecar.directories import InvalidDirectory, check_directory
from sidecar.naming import ModelRef
from sidecar.opencode.activity import ReloadActivity
from sidecar.opencode.client import OpencodeClient, OpencodeError
from sidecar.opencode.handle import Clock, OpencodeHandle, Sleep

log = structlog.get_logger("sidecar.apply")

# An abort this soon after a reload of its directory is counted as the reload's doing.
ABORT_WINDOW = 10.0
# How often the applier looks again when nothing woke it: busy directories, a restarted child.
RECHECK_INTERVAL = 1.0
CONFIRM_ATTEMPTS = 5
# A directory opencode answers errors for (a file, not a directory: HTTP 500 on every route) is
# tried this many times, 1, 2, 4, 8 s apart, then dropped; the default directory is never dropped.
RELOAD_ATTEMPTS = 5
RELOAD_RETRY_INITIAL = 1.0
RELOAD_RETRY_MAX = 60.0
# What opencode does for one directory. A refused connection is opencode's trouble, not the
# directory's: it counts against none (the child's health check sees it).
DIRECTORY_ERRORS = (OpencodeError, httpx.TimeoutException)


def reload_retry_delay(failures: int) -> float:
    """Seconds before trying a directory again after its `failures`-th failure in a row."""
    return restart_delay(failures, initial=RELOAD_RETRY_INITIAL, cap=RELOAD_RETRY_MAX)


class DirectoryUnusable(Exception):
    """opencode kept answering errors for a directory; the message is safe to show the caller."""


def _aborted(event: dict[str, Any]) -> bool:
    payload = event.get("payload")
    properties = payload.get("properties") if isinstance(payload, dict) else None
    error = properties.get("error") if isinstance(properties, dict) else None
    return isinstance(error, dict) and error.get("name") == "MessageAbortedError"


def event_directory_and_type(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """`/global/event` wraps each directory's event as `{"directory": D, "payload": {"type": ...}}`."""
    directory = event.get("directory")
    # Only real project paths: opencode also tags events with markers such as "global".
    try:
        directory = check_directory(directory)
    except InvalidDirectory:
        directory = None
    payload = event.get("payload")
    kind = payload.get("type") if isinstance(payload, dict) else event.get("type")
    return directory, kind if isinstance(kind, str) else None


class Applier:
    """The one task that reloads opencode; the reconciler tells it what it has written."""

    def __init__(
        self,
        client: OpencodeClient,
        child: OpencodeHandle,
        default_directory: Path,
        *,
        max_directories: int,
        reload: Literal["auto", "restart"],
        reload_timeout: float,
        recheck_interval: float = RECHECK_INTERVAL,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        activity: ReloadActivity | None = None,
    ) -> None:
        # Shared with the child's health check: what makes opencode read its config is marked there.
        self.activity = activity or ReloadActivity(clock=clock)
        self._max_directories = max_directories
        self._restart = reload == "restart"
        self._reload_timeout = reload_timeout
        self._recheck = recheck_interval
        self._clock = clock
        self._sleep = sleep
        self._client = client
        self._child = child
        self.default_directory = check_directory(str(default_directory))
        # Least recently used first: the order in which directories are dropped at the bound.
        self._known: OrderedDict[str, None] = OrderedDict({self.default_directory: None})
        self._failures: dict[str, int] = {}  # errors in a row, per directory
        self._retry_at: dict[str, float] = {}
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
    def directories(self) -> frozenset[str]:
        return frozenset(self._known)

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
        self.activity.config_written()
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
            if disposed is not None and self._clock() - disposed < ABORT_WINDOW:
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
        try:
            directory = check_directory(directory)
        except InvalidDirectory as exc:
            log.debug("opencode.directory_refused", reason=str(exc))
            return
        if self._remember(directory):
            self._unverified.add(directory)
            self._wake.set()

    def adopt_default_directory(self, directory: str) -> None:
        """The directory opencode itself runs in (attach mode learns it from opencode)."""
        try:
            directory = check_directory(directory)
        except InvalidDirectory as exc:
            log.warning("opencode.default_directory_refused", reason=str(exc))
            return
        if directory != self.default_directory:
            self._forget(self.default_directory)
            self.default_directory = directory
            self._known[directory] = None
            self._known.move_to_end(directory)
            log.info("opencode.default_directory", directory=directory)

    def _remember(self, directory: str) -> bool:
        """Mark `directory` used now; True when it is new and kept. Beyond the bound the least
        recently used one is dropped: should a client come back to it, it is checked again then."""
        if directory in self._known:
            self._known.move_to_end(directory)
            return False
        self._known[directory] = None
        while len(self._known) > self._max_directories:
            oldest = next(d for d in self._known if d != self.default_directory)
            self._forget(oldest)
            log.info("opencode.directory_dropped", directory=oldest, reason="limit",
                     max_directories=self._max_directories)
        return directory in self._known

    def _forget(self, directory: str) -> None:
        self._known.pop(directory, None)
        for held in (self._pending, self._deferred, self._unverified):
            held.discard(directory)
        for by_directory in (self._failures, self._retry_at, self._disposed_at):
            by_directory.pop(directory, None)

    def _due(self, directory: str) -> bool:
        """Whether a directory that failed has waited out its backoff."""
        return self._retry_at.get(directory, float("-inf")) <= self._clock()

    def _failed(self, directory: str, exc: Exception, during: str) -> None:
        """Count an error of opencode's for `directory`: retry later, or drop it after the bound."""
        failures = self._failures.get(directory, 0) + 1
        error = str(exc) or type(exc).__name__
        if failures >= RELOAD_ATTEMPTS and directory != self.default_directory:
            self._forget(directory)
            log.warning("opencode.directory_dropped", directory=directory, reason="reload_failed",
                        attempts=failures, error=error)
            return
        self._failures[directory] = failures
        delay = reload_retry_delay(failures)
        self._retry_at[directory] = self._clock() + delay
        log.warning("opencode.reload_failed", directory=directory, during=during, attempt=failures,
                    retry_in=delay, error=error)

    def _succeeded(self, directory: str) -> None:
        self._failures.pop(directory, None)
        self._retry_at.pop(directory, None)

    def report(self) -> dict[str, Any]:
        """The config versions written and applied, and the directories still to reload."""
        return {
            "config_version": self.version,
            "applied_version": self.applied_version,
            "applied": self.applied,
            "directories": len(self._known),
            "pending_reloads": sorted(self._pending),
            "waiting_for_idle": sorted(self._deferred & self._pending),
        }

    def _differs(self, listed: dict[str, set[str]]) -> bool:
        """Whether a directory's providers differ from what the written config holds."""
        return any(listed.get(provider, set()) != models for provider, models in self._expected.items())

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        """Wait until `directory` lists `ref`: at once when it is idle, after its prompts
        finish when it is busy; False after `timeout`. Never reloads under a generating prompt.
        DirectoryUnusable when opencode answers errors for it RELOAD_ATTEMPTS times in a row."""
        failures = 0
        with anyio.move_on_after(timeout):
            while True:
                await self._child.wait_healthy()
                pause = 0.05
                if directory not in self._pending:
                    try:
                        # Builds the directory's instance from the current file if it has none.
                        listed = await self._listed(directory)
                    except DIRECTORY_ERRORS as exc:
                        failures += 1
                        error = str(exc) or type(exc).__name__
                        log.warning("opencode.check_failed", directory=directory, attempt=failures, error=error)
                        if failures >= RELOAD_ATTEMPTS:
                            if directory != self.default_directory:
                                self._forget(directory)
                            raise DirectoryUnusable(
                                f"opencode cannot use directory {directory!r}: {error} ({failures} times)"
                            ) from None
                        pause = reload_retry_delay(failures)
                        listed = None
                    except httpx.HTTPError as exc:
                        log.warning("opencode.check_failed", directory=directory, error=str(exc) or type(exc).__name__)
                        listed = None
                    if listed is not None and ref.model_id in listed.get(ref.provider_id, set()):
                        return True
                    if listed is not None:
                        failures = 0
                        # Loaded from an older file without our hearing of it: reload it when idle.
                        self._remember(directory)
                        if directory in self._known:
                            self._pending.add(directory)
                            self._wake.set()
                await self._sleep(pause)
        return False

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow_events)
            seen_generation = 0
            while True:
                await self._child.wait_healthy()
                generation = self._child.generation
                if generation != seen_generation:
                    # A new process read the file as it started: nothing to reload, only to check;
                    # and what the old one failed at is not held against a directory any more.
                    seen_generation = generation
                    self._pending = set()
                    self._failures.clear()
                    self._retry_at.clear()
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
                # Woken by a new config or an idle event; the timeout also notices a new process
                # and a directory whose backoff has run out.
                await self._wait_for_work(self._recheck)

    async def _wait_for_work(self, timeout: float) -> None:
        async with anyio.create_task_group() as group:

            async def give_up() -> None:
                await self._sleep(timeout)
                group.cancel_scope.cancel()

            group.start_soon(give_up)
            await self._wake.wait()
            group.cancel_scope.cancel()
        if self._wake.is_set():
            self._wake = anyio.Event()

    async def _listed(self, directory: str) -> dict[str, set[str]]:
        """The directory's models; the first request after a dispose is where opencode reads the file."""
        with self.activity.reloading():
            return await self._client.provider_model_ids(directory)

    async def _reload_pending(self, generation: int) -> None:
        if self._restart:
            await self._restart_when_idle(generation)
            return
        for directory in sorted(self._pending):
            if not self._due(directory):
                continue
            try:
                busy = await self._client.busy_sessions(directory)
                if busy:
                    self._succeeded(directory)
                    if directory not in self._deferred:
                        self.reloads["deferred"] += 1
                        self._deferred.add(directory)
                        log.info("opencode.reload_deferred", directory=directory, busy_sessions=len(busy))
                    continue
                with self.activity.reloading():
                    await self._client.dispose(directory)
            except DIRECTORY_ERRORS as exc:
                self.reloads["failed"] += 1
                self._failed(directory, exc, "reload")
                continue
            self.reloads["reloaded"] += 1
            self._succeeded(directory)
            self._disposed_at[directory] = self._clock()
            self._pending.discard(directory)
            log.info("opencode.reloaded", directory=directory, version=self.version)

    async def _verify_new_directories(self) -> None:
        """A directory first seen now gets reloaded (when idle) if it lists other models."""
        for directory in sorted(self._unverified):
            if directory in self._pending:
                self._unverified.discard(directory)
                continue
            if not self._due(directory):
                continue
            try:
                listed = await self._listed(directory)
            except DIRECTORY_ERRORS as exc:
                self._failed(directory, exc, "check")
                continue
            self._unverified.discard(directory)
            self._succeeded(directory)
            if self._differs(listed):
                log.info("opencode.stale_directory", directory=directory, version=self.version)
                self._pending.add(directory)

    async def _confirm_where_reloaded(self, generation: int) -> None:
        """Check in a directory that already reads the new file; busy ones may still lag."""
        current = self.directories - self._pending - self._unverified
        if not current:
            return
        directory = self.default_directory if self.default_directory in current else min(current)
        await self._confirm(generation, directory)

    async def _restart_when_idle(self, generation: int) -> None:
        with anyio.move_on_after(self._reload_timeout) as scope:
            while True:
                busy = 0
                for directory in sorted(self._known):
                    if not self._due(directory):
                        continue
                    try:
                        busy += len(await self._client.busy_sessions(directory))
                    except DIRECTORY_ERRORS as exc:
                        self._failed(directory, exc, "restart")
                if not busy:
                    break
                log.info("opencode.restart_deferred", busy_sessions=busy)
                await self._sleep(self._recheck)
        if scope.cancelled_caught:
            log.warning("opencode.restart_forced", waited=self._reload_timeout)
        self._pending = set()
        self.reloads["restarted"] += 1
        self._child.request_restart()
        while self._child.generation == generation:
            await self._sleep(0.05)

    async def _confirm(self, generation: int, directory: str) -> None:
        """Check that opencode lists exactly the rendered models; on a mismatch, reload again
        (through the idle-aware path, never under a generating prompt), a bounded number of times."""
        version, expected = self.version, self._expected
        if self._mismatches >= CONFIRM_ATTEMPTS or not self._due(directory):
            return
        try:
            listed = await self._listed(directory)
        except DIRECTORY_ERRORS as exc:
            self._failed(directory, exc, "confirm")
            return
        self._succeeded(directory)
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
            await self._sleep(0.2)

