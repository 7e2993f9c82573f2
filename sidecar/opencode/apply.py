"""Apply a rewritten config to the running opencode without aborting a prompt.

opencode reads its config when it builds the instance for a directory, and every way of making
it read again aborts the prompts generating in the directories it drops. So each directory is
dropped (`/instance/dispose`) at once when it is idle, and a busy one as soon as it goes idle.

Which directories there are and where each stands is kept in tracked.TrackedDirectories.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import structlog

from sidecar.directories import check_directory
from sidecar.memory import release_free_memory
from sidecar.naming import ModelRef
from sidecar.opencode.activity import ReloadActivity
from sidecar.opencode.client import OpencodeClient, OpencodeError
from sidecar.opencode.confirm import Confirmation
from sidecar.opencode.gate import PROMPT_WAIT, ReloadGate
from sidecar.opencode.events import event_directory_and_type, event_session, follow_events, is_abort
from sidecar.opencode.handle import Clock, OpencodeHandle, Sleep
from sidecar.opencode.idle import until_idle
from sidecar.opencode.tracked import DIRECTORY_ERRORS, RELOAD_ATTEMPTS, TrackedDirectories, reload_retry_delay

log = structlog.get_logger("sidecar.apply")

# An abort this soon after a reload of its directory is counted as the reload's doing.
ABORT_WINDOW = 10.0
# How often the applier looks again when nothing woke it while work is outstanding: busy
# directories, ones backing off, a config not yet confirmed.
RECHECK_INTERVAL = 1.0
# ... and when none is: whatever makes work wakes it (a new config, a directory seen, an idle
# event, a new process's event stream saying `server.connected`); this is only a safety net. A look
# every second cost an idle sidecar a wake-up a second for nothing (issue 19).
IDLE_RECHECK = 30.0
# How often a refresh looks whether the directories are reloaded yet.
SETTLED_CHECK = 0.05


class DirectoryUnusable(Exception):
    """opencode kept answering errors for a directory; the message is safe to show the caller."""


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
        prompt_wait: float = PROMPT_WAIT,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        release: Callable[[], object] = release_free_memory,
    ) -> None:
        self._release = release
        # Told of every event of opencode's stream too (sidecar/failing.py reads models' refusals).
        self._on_event = on_event
        # Shared with the child's health check: what makes opencode read its config is marked there.
        self.activity = activity or ReloadActivity(clock=clock)
        self._restart = reload == "restart"
        self._reload_timeout = reload_timeout
        self._recheck = recheck_interval
        self._sleep = sleep
        self._client = client
        self._child = child
        self._dirs = TrackedDirectories(check_directory(str(default_directory)), max_directories, clock)
        # What the pass-through's prompt starts wait on while their directory is reloaded.
        self.gate = ReloadGate(lambda: self._dirs.default, max_wait=prompt_wait, clock=clock, sleep=sleep)
        self._confirmation = Confirmation()
        self._wake = anyio.Event()
        # For /metrics: reloads by result, and prompts aborted right after a reload (should stay 0).
        self.reloads: Counter[str] = Counter()
        self.prompts_aborted_by_reload = 0

    @property
    def directories(self) -> frozenset[str]:
        return self._dirs.names

    @property
    def default_directory(self) -> str:
        return self._dirs.default

    @property
    def version(self) -> int:
        """Of the config written."""
        return self._confirmation.version

    @property
    def applied(self) -> bool:
        return self._confirmation.applied(self._child.generation)

    def config_written(self, expected: dict[str, set[str]]) -> None:
        """A new config is on disk; opencode must end up listing exactly these models per provider."""
        self._confirmation.written(expected)
        self.activity.config_written()
        self._dirs.pending = set(self._dirs.names)
        self._dirs.deferred = set()
        self._wake.set()

    def note_event(self, event: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(event)
        directory, kind = event_directory_and_type(event)
        if kind == "server.connected":
            # The stream (re)connected: maybe to a new process, which the loop takes in.
            self._wake.set()
        if kind == "session.status" and (session := event_session(event)) is not None:
            # opencode's busy status now covers a prompt the pass-through started there.
            self.gate.session_reported(session)
        if directory is None:
            return
        if kind == "session.error" and is_abort(event):
            if self._dirs.disposed_within(directory, ABORT_WINDOW):
                # What this sidecar exists to prevent: say it loudly.
                self.prompts_aborted_by_reload += 1
                log.error("opencode.prompt_aborted_by_reload", directory=directory)
        self.note_directory(directory)
        if directory in self._dirs.pending and kind in {"session.idle", "session.status"}:
            self._wake.set()

    def note_directory(self, directory: str) -> None:
        """A directory opencode may have loaded: from its events, or a request the pass-through
        forwarded there. opencode announces no instance loads, so one first seen now may have read
        an older file: it is checked, and reloaded when idle if it is stale."""
        if self._dirs.first_seen(directory):
            log.info("opencode.directory_seen", directory=directory)
            self._wake.set()

    def adopt_default_directory(self, directory: str) -> None:
        """The directory opencode itself runs in (attach mode learns it from opencode)."""
        self._dirs.adopt_default(directory)

    def report(self) -> dict[str, Any]:
        """The config versions written and applied, and the directories still to reload."""
        return {
            "config_version": self.version,
            "applied_version": self._confirmation.applied_version,
            "applied": self.applied,
            "directories": len(self._dirs),
            "pending_reloads": sorted(self._dirs.pending),
            "waiting_for_idle": sorted(self._dirs.deferred & self._dirs.pending),
            # Prompts that waited SIDECAR_PROMPT_RELOAD_WAIT for a reload and went on (should stay 0).
            "prompt_waits_timed_out": self.gate.waits_timed_out,
        }

    async def settled(self, timeout: float) -> bool:
        """Wait until every directory to reload is reloaded or waits for its prompts to end (a
        refresh's answer); False after `timeout`."""
        with anyio.move_on_after(timeout):
            while self._dirs.pending - self._dirs.deferred:
                await self._sleep(SETTLED_CHECK)
            return True
        return False

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        """Wait until `directory` lists `ref`: at once when it is idle, after its prompts
        finish when it is busy; False after `timeout`. Never reloads under a generating prompt.
        DirectoryUnusable when opencode answers errors for it RELOAD_ATTEMPTS times in a row."""
        failures = 0
        with anyio.move_on_after(timeout):
            while True:
                await self._child.wait_healthy()
                pause = 0.05
                if directory not in self._dirs.pending:
                    try:
                        # Builds the directory's instance from the current file if it has none.
                        listed = await self._listed(directory)
                    except DIRECTORY_ERRORS as exc:
                        failures += 1
                        error = str(exc) or type(exc).__name__
                        log.warning("opencode.check_failed", directory=directory, attempt=failures, error=error)
                        if failures >= RELOAD_ATTEMPTS:
                            if directory != self._dirs.default:
                                self._dirs.forget(directory)
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
                        self._dirs.remember(directory)
                        if directory in self._dirs:
                            self._dirs.pending.add(directory)
                            self._wake.set()
                await self._sleep(pause)
        return False

    async def run(self) -> None:
        async with anyio.create_task_group() as group:
            # Which directories opencode has loaded, and when their sessions go idle.
            group.start_soon(follow_events, self._client, self._child, self.note_event, self._sleep)
            seen_generation = 0
            released = 0
            while True:
                await self._child.wait_healthy()
                generation = self._child.generation
                if generation != seen_generation:
                    seen_generation = generation
                    self._dirs.new_process()
                try:
                    if self._dirs.unverified and self.version:
                        await self._verify_new_directories()
                    if self._dirs.pending:
                        await self._reload_pending(generation)
                    if self.version and not self.applied:
                        # A restart-mode reload has started a new process meanwhile.
                        await self._confirm_where_reloaded(self._child.generation)
                except (OpencodeError, httpx.HTTPError) as exc:
                    log.warning("opencode.reload_failed", error=str(exc) or type(exc).__name__)
                if self.version != released and not self._outstanding():
                    # A new config is applied: what reading opencode's answers allocated is freed
                    # now (memory.py).
                    released = self.version
                    self._release()
                # Woken by a new config, an idle event or a new process's stream; the timeout also
                # notices a directory whose backoff has run out.
                await self._wait_for_work(self._recheck if self._outstanding() else max(self._recheck, IDLE_RECHECK))

    def _outstanding(self) -> bool:
        """Whether there is work that a timer, not an event, may make ready (a busy directory's or a
        failed one's retry; a confirmation)."""
        dirs = self._dirs
        return bool(dirs.pending or dirs.unverified or dirs.deferred) or bool(self.version and not self.applied)

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

    async def _listed_or_failed(self, directory: str, during: str) -> dict[str, set[str]] | None:
        """The directory's models, or None when opencode answered an error (counted against it)."""
        try:
            listed = await self._listed(directory)
        except DIRECTORY_ERRORS as exc:
            self._dirs.failed(directory, exc, during)
            return None
        self._dirs.succeeded(directory)
        return listed

    async def _reload_pending(self, generation: int) -> None:
        if self._restart:
            await self._restart_when_idle(generation)
            return
        for directory in sorted(self._dirs.pending):
            if not self._dirs.due(directory):
                continue
            # Closed to prompts through the sidecar from the busy check until the dispose is done:
            # one started in between would be aborted. One being started now counts as busy.
            if not self.gate.try_hold(directory):
                self._defer(directory, busy_sessions=0, prompts_starting=True)
                continue
            try:
                busy = await self._client.busy_sessions(directory)
                if busy:
                    self._dirs.succeeded(directory)
                    self._defer(directory, busy_sessions=len(busy), prompts_starting=False)
                    continue
                with self.activity.reloading():
                    await self._client.dispose(directory)
            except DIRECTORY_ERRORS as exc:
                self.reloads["failed"] += 1
                self._dirs.failed(directory, exc, "reload")
                continue
            finally:
                # Once the dispose has returned, a prompt lands on an instance that reads the new file.
                self.gate.release(directory)
            self.reloads["reloaded"] += 1
            self._dirs.succeeded(directory)
            self._dirs.disposed(directory)
            self._dirs.pending.discard(directory)
            log.info("opencode.reloaded", directory=directory, version=self.version)

    def _defer(self, directory: str, *, busy_sessions: int, prompts_starting: bool) -> None:
        if directory not in self._dirs.deferred:
            self.reloads["deferred"] += 1
            self._dirs.deferred.add(directory)
            log.info("opencode.reload_deferred", directory=directory, busy_sessions=busy_sessions,
                     prompts_starting=prompts_starting)

    async def _verify_new_directories(self) -> None:
        """A directory first seen now gets reloaded (when idle) if it lists other models."""
        for directory in sorted(self._dirs.unverified):
            if directory in self._dirs.pending:
                self._dirs.unverified.discard(directory)
                continue
            if not self._dirs.due(directory):
                continue
            listed = await self._listed_or_failed(directory, "check")
            if listed is None:
                continue
            self._dirs.unverified.discard(directory)
            if self._confirmation.differs(listed):
                log.info("opencode.stale_directory", directory=directory, version=self.version)
                self._dirs.pending.add(directory)

    async def _confirm_where_reloaded(self, generation: int) -> None:
        """Check in a directory that already reads the new file; busy ones may still lag."""
        current = self._dirs.names - self._dirs.pending - self._dirs.unverified
        if not current:
            return
        directory = self._dirs.default if self._dirs.default in current else min(current)
        await self._confirm(generation, directory)

    async def _restart_when_idle(self, generation: int) -> None:
        await until_idle(self._client, self._dirs, timeout=self._reload_timeout, recheck=self._recheck,
                         sleep=self._sleep)
        self._dirs.pending = set()
        self.reloads["restarted"] += 1
        self._child.request_restart()
        while self._child.generation == generation:
            await self._sleep(0.05)

    async def _confirm(self, generation: int, directory: str) -> None:
        """Check that opencode lists exactly the rendered models; on a mismatch, reload again
        (through the idle-aware path, never under a generating prompt), a bounded number of times."""
        version, expected = self._confirmation.version, self._confirmation.expected
        if self._confirmation.gave_up or not self._dirs.due(directory):
            return
        listed = await self._listed_or_failed(directory, "confirm")
        if listed is None:
            return
        if self._confirmation.check(version, expected, listed, generation, directory):
            self._dirs.pending.add(directory)
