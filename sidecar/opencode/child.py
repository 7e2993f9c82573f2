"""The opencode child process: spawn it, wait for health, restart it when it dies, stop it cleanly."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio
import structlog
from anyio.abc import Process, TaskStatus

from sidecar.backoff import restart_delay
from sidecar.opencode.activity import ReloadActivity, ReloadsInFlight
from sidecar.opencode.client import OpencodeClient
from sidecar.opencode.handle import Clock, Sleep
from sidecar.opencode.record import RECORD_NAME, ProcessStat, read_boot_id, read_stat
from sidecar.opencode.recorded import RecordedChild, SignalGroup
from sidecar.opencode.spawn import (
    OpencodeStartError,
    SpawnProcess,
    child_environment,
    resolve_binary,
    serve_command,
    signal_process_group,
    spawn_process,
)
from sidecar.settings import Settings
from sidecar.statedir import PRIVATE_DIR, PRIVATE_FILE

log = structlog.get_logger("sidecar.child")


class OpencodeChild:
    """The one owner of the opencode process, an OpencodeHandle.

    Other tasks read `healthy` and `generation`, wait for `wait_healthy()`, and ask for a restart
    with `request_restart()`; only `run()` touches the process.

    It takes Settings whole: the binary, port and directory it starts, its environment (the state
    directory, the password, every gateway's variables), the backoff, the health checks and the
    stop grace are thirteen of its fields; a parameter object would copy Settings.
    """

    def __init__(
        self,
        settings: Settings,
        config_path: Path,
        client: OpencodeClient,
        *,
        spawn: SpawnProcess = spawn_process,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
        wall: Clock = time.time,
        signal_group: SignalGroup = signal_process_group,
        process_stat: Callable[[int], ProcessStat | None] = read_stat,
        boot_id: Callable[[], str | None] = read_boot_id,
        activity: ReloadsInFlight | None = None,
    ) -> None:
        # One that nobody marks is never in flight: every failed check counts.
        self._activity = activity if activity is not None else ReloadActivity()
        self._signal_group = signal_group
        self._settings = settings
        self._config_path = config_path
        self._client = client
        self._spawn = spawn
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._process: Process | None = None
        self._restart_requested = anyio.Event()
        self._healthy_event = anyio.Event()
        self.healthy = False
        self.generation = 0  # counts processes that became healthy
        self.restarts = 0
        self.crashes = 0  # consecutive: what the backoff follows
        self.state = "starting"  # starting, running, backoff, stopped
        self.healthy_since: float | None = None  # wall-clock time
        self.backoff_until: float | None = None  # wall-clock time
        self.log_path = settings.state_dir / "opencode.log"
        # Which opencode is ours, for the next sidecar if this one is killed before it stops it.
        self._recorded = RecordedChild(
            settings.state_dir / RECORD_NAME,
            grace=settings.stop_grace,
            signal_group=signal_group,
            process_stat=process_stat,
            boot_id=boot_id,
            clock=clock,
            sleep=sleep,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def wait_healthy(self) -> None:
        while not self.healthy:
            await self._healthy_event.wait()

    def request_restart(self) -> None:
        self._restart_requested.set()

    async def stop_stale(self) -> None:
        """Stop an opencode that an earlier sidecar on this state directory started and never
        stopped, before ours needs its port. Only while holding the state directory's lock."""
        await self._recorded.stop_stale()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep opencode running until cancelled; the first start failing raises OpencodeStartError."""
        command = serve_command(resolve_binary(self._settings.opencode_bin), self._settings.opencode_port)
        self.log_path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        with os.fdopen(fd, "ab") as output:
            try:
                await self._keep_running(command, output, task_status)
            finally:
                await self.stop()

    def report(self) -> dict[str, Any]:
        now = self._wall()
        return {
            "state": self.state,
            "pid": self.pid,
            "healthy": self.healthy,
            "uptime": round(now - self.healthy_since, 3) if self.healthy and self.healthy_since else None,
            "restarts": self.restarts,
            "consecutive_crashes": self.crashes,
            "backoff_until": self.backoff_until if self.state == "backoff" else None,
        }

    async def _keep_running(self, command: list[str], output: IO[Any], task_status: TaskStatus[None]) -> None:
        started = False
        while True:
            self.state = "starting"
            try:
                healthy_since = await self._start(command, output)
            except OpencodeStartError as exc:
                if not started:
                    raise
                self.crashes += 1
                log.warning("child.start_failed", error=str(exc), crashes=self.crashes)
            else:
                if not started:
                    started = True
                    task_status.started()
                self.state = "running"
                reason = await self._watch()
                if reason == "restart":
                    self.crashes = 0
                    continue
                if self._clock() - healthy_since >= self._settings.restart_backoff_reset:
                    self.crashes = 0
                self.crashes += 1
            delay = restart_delay(
                self.crashes,
                initial=self._settings.restart_backoff_initial,
                cap=self._settings.restart_backoff_max,
            )
            self.state, self.backoff_until = "backoff", self._wall() + delay
            log.warning("child.restart_scheduled", delay=delay, crashes=self.crashes)
            await self._sleep(delay)

    async def _start(self, command: list[str], output: IO[Any]) -> float:
        env = child_environment(self._settings, self._config_path)
        try:
            process = await self._spawn(
                command, env=env, cwd=self._settings.opencode_directory, output=output
            )
        except OSError as exc:
            raise OpencodeStartError(f"cannot start opencode: {exc.strerror}") from None
        self._process = process
        log.info("child.started", pid=process.pid, port=self._settings.opencode_port)
        await self._recorded.record(process.pid)
        deadline = self._clock() + self._settings.opencode_start_timeout
        while True:
            if process.returncode is not None:
                self._process = None
                raise OpencodeStartError(
                    f"opencode exited with code {process.returncode} before it became healthy; "
                    f"its output is in {self.log_path}"
                )
            if await self._client.healthy():
                break
            if self._clock() > deadline:
                await self._stop_process(process)
                raise OpencodeStartError(
                    f"opencode did not become healthy within {self._settings.opencode_start_timeout}s; "
                    f"its output is in {self.log_path}"
                )
            with anyio.move_on_after(0.1):
                await process.wait()
        self.generation += 1
        self.healthy = True
        self.healthy_since = self._wall()
        self._healthy_event.set()
        log.info("child.healthy", pid=process.pid, generation=self.generation)
        return self._clock()

    async def _watch(self) -> str:
        """Wait until the process exits, stops answering, or a restart is asked for; say which."""
        process = self._process
        assert process is not None
        reason = "exited"
        async with anyio.create_task_group() as group:

            async def restart_on_request() -> None:
                nonlocal reason
                await self._restart_requested.wait()
                reason = "restart"
                group.cancel_scope.cancel()

            async def until_unresponsive() -> None:
                nonlocal reason
                await self._until_unresponsive(process.pid)
                reason = "unresponsive"
                group.cancel_scope.cancel()

            group.start_soon(restart_on_request)
            group.start_soon(until_unresponsive)
            await process.wait()
            group.cancel_scope.cancel()
        self._mark_down()
        if reason == "restart":
            self._restart_requested = anyio.Event()
            log.info("child.restarting", pid=process.pid)
            await self._stop_process(process)
        elif reason == "unresponsive":
            # A hung (or stopped) process ignores SIGTERM: it goes at once, with its group.
            self.restarts += 1
            log.error("child.unresponsive", pid=process.pid, failed_checks=self._settings.health_failures)
            with anyio.CancelScope(shield=True):
                self._signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        else:
            self.restarts += 1
            log.warning("child.exited", pid=process.pid, returncode=process.returncode)
            self._signal_group(process.pid, signal.SIGKILL)
        self._process = None
        return reason

    async def _until_unresponsive(self, pid: int) -> None:
        """Check health every interval; return once it failed the limit in a row, not counting
        what a reload in flight excuses."""
        failures = 0
        excused_since: float | None = None
        # A reload may take as long as a start may: opencode reads the same file either way.
        bound = self._settings.opencode_start_timeout
        while True:
            await self._sleep(self._settings.health_interval)
            if await self._client.healthy():
                failures, excused_since = 0, None
                continue
            now = self._clock()
            if self._activity.in_flight():
                excused_since = now if excused_since is None else excused_since
                if now - excused_since < bound:
                    # Busy reading a big config, not hung: a failure only once the bound is past.
                    log.info("child.health_check_excused", pid=pid, reason="reload_in_flight",
                             excused_for=round(now - excused_since, 3), bound=bound)
                    continue
            failures += 1
            limit = self._settings.health_failures
            log.warning("child.health_check_failed", pid=pid, failures=failures, limit=limit)
            if failures >= limit:
                return

    def _mark_down(self) -> None:
        self.healthy = False
        self._healthy_event = anyio.Event()

    async def stop(self) -> None:
        """Stop the child: SIGTERM to its group, the grace period, then SIGKILL."""
        self._mark_down()
        self.state = "stopped"
        if self._process is not None:
            await self._stop_process(self._process)
            self._process = None
        self._recorded.forget()

    async def _stop_process(self, process: Process) -> None:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                self._signal_group(process.pid, signal.SIGTERM)
                with anyio.move_on_after(self._settings.stop_grace):
                    await process.wait()
            # Whatever opencode started in its group goes too, even after opencode itself exited.
            self._signal_group(process.pid, signal.SIGKILL)
            if process.returncode is None:
                await process.wait()
            log.info("child.stopped", pid=process.pid, returncode=process.returncode)
