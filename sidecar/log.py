"""JSON-lines logging with stable event names; known secret values are scrubbed from every line,
and a warning or error repeated faster than anyone can read is counted instead of written."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from sidecar.redact import Redactor

SUPPRESSED = "log.suppressed"
LIMITED_LEVELS = frozenset({"warning", "error", "critical"})

Schedule = Callable[[float, Callable[[], None]], bool]


class SecretScrubber:
    """A structlog processor that replaces every known secret value, wherever it appears in an
    event: in any field, nested in dicts and lists, or in the text of any other value."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._redact = Redactor(secrets)

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self._redact:
            return event
        return {key: self._scrub(value) for key, value in event.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact.text(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [self._scrub(v) for v in value]
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self._scrub(str(value))


def call_later_on_running_loop(delay: float, callback: Callable[[], None]) -> bool:
    """Run `callback` after `delay` on this thread's event loop; False when none runs."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    loop.call_later(delay, callback)
    return True


@dataclass
class _Window:
    start: float
    written: int = 0
    suppressed: int = 0
    flush_scheduled: bool = False


class RepeatLimiter:
    """A structlog processor: a warning or error under one event name is written at most `burst`
    times per `window` seconds; the rest are dropped and counted, and one `log.suppressed` line
    says how many when the window ends. 1,100 connections failing at once then cost a dozen lines,
    not 35 MB. The event name alone is the key, so that varying fields (a client's port, a path)
    cannot defeat the limit; events come from a fixed set in the code, so the table stays small.

    The summary is written from a timer on the running event loop (`schedule`), or, without one,
    when the same event comes again."""

    def __init__(
        self,
        *,
        burst: int = 5,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        schedule: Schedule = call_later_on_running_loop,
        write_summary: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._schedule = schedule
        self._write_summary = write_summary or _log_summary
        self._windows: dict[tuple[str, str], _Window] = {}
        # Re-entrant: a summary is itself a log line that passes through this processor.
        self._lock = threading.RLock()

    def __call__(self, _logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        level = event.get("level", method)
        name = event.get("event")
        if level not in LIMITED_LEVELS or name == SUPPRESSED or not isinstance(name, str):
            return event
        key = (level, name)
        with self._lock:
            now = self._clock()
            window = self._windows.get(key)
            if window is not None and now - window.start >= self.window:
                self._close(key, window)
                window = None
            if window is None:
                window = self._windows[key] = _Window(start=now)
            if window.written < self.burst:
                window.written += 1
                return event
            window.suppressed += 1
            if not window.flush_scheduled:
                window.flush_scheduled = self._schedule(window.start + self.window - now, self.flush)
        raise structlog.DropEvent

    def flush(self) -> None:
        """Write the summary of every window that has ended."""
        with self._lock:
            now = self._clock()
            for key, window in list(self._windows.items()):
                if now - window.start >= self.window:
                    self._close(key, window)
                elif window.suppressed and not window.flush_scheduled:
                    window.flush_scheduled = self._schedule(window.start + self.window - now, self.flush)

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        del self._windows[key]
        if window.suppressed:
            level, name = key
            self._write_summary(level, name, window.suppressed, self.window)


def _log_summary(level: str, name: str, count: int, seconds: float) -> None:
    structlog.get_logger("sidecar.log").log(
        logging.getLevelName(level.upper()), SUPPRESSED, repeated=name, count=count, seconds=seconds
    )


class StdlibBridge(logging.Handler):
    """Warnings and errors of libraries that log through `logging` (asyncio, uvicorn), as JSON lines
    through the same processors: scrubbed, rate-limited, under the event `stdlib.<logger>`; no
    longer bare tracebacks on stderr from logging's last-resort handler."""

    # uvicorn's sans-io websocket protocol logs this error after every handshake the app refuses
    # with an HTTP answer (the ASGI denial-response extension), which is how a refused key, Host or
    # Origin is answered on a websocket: a refusal, not a fault, and one an attacker could repeat.
    EXPECTED = frozenset({("uvicorn.error", "ASGI callable returned without completing handshake.")})

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        if (record.name, message) in self.EXPECTED:
            return
        fields: dict[str, Any] = {"logger": record.name, "message": message.partition("\n")[0]}
        if record.exc_info and record.exc_info[1] is not None:
            fields["exc_info"] = record.exc_info
        level = min(max(record.levelno // 10 * 10, logging.WARNING), logging.CRITICAL)
        structlog.get_logger(record.name).log(level, f"stdlib.{record.name}", **fields)


def configure_logging(level: str = "info", secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """JSON lines on `stream` (stdout by default; a command whose stdout is its answer passes stderr)."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RepeatLimiter(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretScrubber(secrets),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StdlibBridge)]:
        root.removeHandler(handler)
    root.addHandler(StdlibBridge())
