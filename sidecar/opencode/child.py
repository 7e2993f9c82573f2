"""The opencode child process: spawn it, wait for health, restart it when it dies, stop it cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import anyio
import structlog
from anyio.abc import Process, TaskStatus

from sidecar.backoff import restart_delay
from sidecar.opencode.client import OpencodeClient
from sidecar.opencode.record import (
    RECORD_NAME,
    ChildRecord,
    ProcessStat,
    identify,
    load_record,
    read_boot_id,
    read_stat,
    save_record,
)
from sidecar.settings import ENV_PREFIX, Settings
from sidecar.statedir import PRIVATE_DIR, PRIVATE_FILE

log = structlog.get_logger("sidecar.child")

LAUNCHER = Path(__file__).with_name("launch.py")
# Whatever opencode and the commands it runs create (its database, sessions, snapshots, and files
# in the project too) is its user's alone.
CHILD_UMASK = 0o077
STALE_POLL = 0.05  # seconds between looks at a stale opencode that was asked to stop


class OpencodeStartError(Exception):
    """opencode could not be started; the message says why in one line."""


class ReloadsInFlight(Protocol):
    """Whether opencode may be busy reading a new config (activity.ReloadActivity)."""

    def in_flight(self) -> bool: ...


class _NoReloads:
    def in_flight(self) -> bool:
        return False


class SpawnProcess(Protocol):
    def __call__(
        self, command: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, output: IO[Any]
    ) -> Awaitable[Process]: ...


def launcher_command(command: Sequence[str], parent_pid: int) -> list[str]:
    """On Linux, `command` run so that it dies with `parent_pid` (see launch.py); as is elsewhere."""
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(parent_pid), *command]


async def spawn_process(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, output: IO[Any]
) -> Process:
    # The parent-death signal follows the *thread* that forked, not the process: anyio forks in
    # the thread running the event loop, which lives as long as the sidecar does. Never spawn from
    # a worker thread (anyio.to_thread): opencode would die when that thread is retired.
    return await anyio.open_process(
        launcher_command(command, os.getpid()),
        env=dict(env),
        cwd=cwd,
        stdin=None,
        stdout=output,
        stderr=output,
        # A process group of its own, so that stopping it reaches everything it started.
        start_new_session=True,
        umask=CHILD_UMASK,
    )


def resolve_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise OpencodeStartError(
            f"opencode not found: {ENV_PREFIX}OPENCODE_BIN={name} is not an executable file or on PATH"
        )
    return found


def child_environment(settings: Settings, config_path: Path) -> dict[str, str]:
    """The child's environment: ours without SIDECAR_* variables, plus what opencode needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    opencode_home = settings.state_dir / "opencode"
    for name in ("DATA", "CONFIG", "CACHE", "STATE"):
        env[f"XDG_{name}_HOME"] = str(opencode_home / name.lower())
    env["OPENCODE_CONFIG"] = str(config_path)
    assert settings.opencode_password is not None
    env["OPENCODE_SERVER_PASSWORD"] = settings.opencode_password.get_secret_value()
    env.pop("OPENCODE_SERVER_USERNAME", None)
    # The config names each gateway's key and header variables; opencode expands them itself.
    for gateway in settings.gateways:
        for name in gateway.env_names:
            if name in os.environ:
                env[name] = os.environ[name]
        if gateway.api_key_env is not None and gateway.api_key is not None:
            env[gateway.api_key_env] = gateway.api_key.get_secret_value()
    return env


class OpencodeChild:
    """The one owner of the opencode process.

    Other tasks read `healthy` and `generation`, wait for `wait_healthy()`, and ask for a restart
    with `request_restart()`; only `run()` touches the process.
    """

    def __init__(
        self,
        settings: Settings,
        config_path: Path,
        client: OpencodeClient,
        *,
        spawn: SpawnProcess = spawn_process,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        signal_group: Callable[[int, signal.Signals], None] | None = None,
        process_stat: Callable[[int], ProcessStat | None] = read_stat,
        boot_id: Callable[[], str | None] = read_boot_id,
        activity: ReloadsInFlight | None = None,
    ) -> None:
        self._activity = activity or _NoReloads()
        self._signal_group = signal_group or _signal_group
        self._process_stat = process_stat
        self._boot_id = boot_id
        self._settings = settings
        self._config_path = config_path
        self._client = client
        self._spawn = spawn
        self._clock = clock
        self._sleep = sleep
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
        self.record_path = settings.state_dir / RECORD_NAME

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def wait_healthy(self) -> None:
        while not self.healthy:
            await self._healthy_event.wait()

    def request_restart(self) -> None:
        self._restart_requested.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep opencode running until cancelled; the first start failing raises OpencodeStartError."""
        binary = resolve_binary(self._settings.opencode_bin)
        command = [
            binary,
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(self._settings.opencode_port),
        ]
        self.log_path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        with os.fdopen(fd, "ab") as output:
            try:
                await self._keep_running(command, output, task_status)
            finally:
                await self.stop()

    def report(self) -> dict[str, Any]:
        now = time.time()
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
            self.state, self.backoff_until = "backoff", time.time() + delay
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
        await self._record(process.pid)
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
        self.healthy_since = time.time()
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

            async def check_health() -> None:
                nonlocal reason
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
                            log.info("child.health_check_excused", pid=process.pid, reason="reload_in_flight",
                                     excused_for=round(now - excused_since, 3), bound=bound)
                            continue
                    failures += 1
                    limit = self._settings.health_failures
                    log.warning("child.health_check_failed", pid=process.pid, failures=failures, limit=limit)
                    if failures >= limit:
                        reason = "unresponsive"
                        group.cancel_scope.cancel()
                        return

            group.start_soon(restart_on_request)
            group.start_soon(check_health)
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
        self.record_path.unlink(missing_ok=True)

    async def _record(self, pid: int) -> None:
        now = self._process_stat(pid)
        if now is None:
            return  # gone already: the health wait reports it
        record = ChildRecord(pid, now.start_time, self._boot_id())
        try:
            await anyio.to_thread.run_sync(save_record, self.record_path, record)
        except OSError as exc:
            # Not fatal: the parent-death signal stops opencode with us; the record is the fallback.
            log.warning("child.record_failed", path=str(self.record_path), error=exc.strerror or type(exc).__name__)

    async def stop_stale(self) -> None:
        """Stop an opencode that an earlier sidecar on this state directory started and never
        stopped (killed, or no parent-death signal), before ours needs its port. Call it only
        while holding the state directory's lock: the recorded opencode is then nobody's."""
        record = load_record(self.record_path)
        if record is None:
            return
        verdict = self._identify(record)
        if verdict != "ours":
            log.info("child.stale_record_ignored", pid=record.pid, reason=verdict)
        else:
            log.warning("child.stale_found", pid=record.pid, start_time=record.start_time)
            try:
                with anyio.CancelScope(shield=True):
                    await self._stop_recorded(record)
            except PermissionError:
                # Another user's (a state directory reused across users): not ours to stop.
                log.error("child.stale_unstoppable", pid=record.pid, error="not permitted")
        self.record_path.unlink(missing_ok=True)

    def _identify(self, record: ChildRecord) -> str:
        return identify(record, self._process_stat(record.pid), self._boot_id())

    async def _stop_recorded(self, record: ChildRecord) -> None:
        self._signal_group(record.pid, signal.SIGTERM)
        await self._wait_stale_gone(record)
        by = "SIGTERM" if self._identify(record) != "ours" else "SIGKILL"
        # What it started in its group goes too, unless its pid has gone to another process since.
        if self._identify(record) in ("ours", "exited"):
            self._signal_group(record.pid, signal.SIGKILL)
            await self._wait_stale_gone(record)
        if self._identify(record) == "ours":
            # Stuck in the kernel (state D): the start that follows reports the port it holds.
            log.error("child.stale_unstoppable", pid=record.pid)
            return
        log.warning("child.stale_stopped", pid=record.pid, signal=by)

    async def _wait_stale_gone(self, record: ChildRecord) -> None:
        # Not our child: nothing to wait() on, so look at /proc until it is gone or the grace is over.
        deadline = self._clock() + self._settings.stop_grace
        while self._identify(record) == "ours" and self._clock() < deadline:
            await self._sleep(STALE_POLL)

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


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
