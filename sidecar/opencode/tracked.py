"""The directories opencode may have loaded, and where each stands: to check, to reload, waiting for
its prompts to finish, or backing off after opencode answered errors for it.

The directories come from clients and from opencode's events, so the set is bounded (the least
recently used dropped first) and a directory opencode keeps answering errors for is retried with
backoff, then dropped. The default directory, the one opencode runs in, is never dropped.
"""

from __future__ import annotations

from collections import OrderedDict

import httpx
import structlog

from sidecar.backoff import restart_delay
from sidecar.directories import InvalidDirectory, check_directory
from sidecar.opencode.client import OpencodeError
from sidecar.opencode.handle import Clock

log = structlog.get_logger("sidecar.apply")

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


class TrackedDirectories:
    """The applier's bookkeeping: every directory here is a checked, normalised path."""

    def __init__(self, default: str, limit: int, clock: Clock) -> None:
        self.default = default
        self._limit = limit
        self._clock = clock
        # Least recently used first: the order in which directories are dropped at the bound.
        self._known: OrderedDict[str, None] = OrderedDict({default: None})
        self.pending: set[str] = set()  # to reload
        self.deferred: set[str] = set()  # busy directories already logged for this version
        self.unverified: set[str] = set()  # first seen since the config was written: to check
        self._failures: dict[str, int] = {}  # errors in a row, per directory
        self._retry_at: dict[str, float] = {}
        self._disposed_at: dict[str, float] = {}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._known)

    def __contains__(self, directory: object) -> bool:
        return directory in self._known

    def __len__(self) -> int:
        return len(self._known)

    def first_seen(self, directory: str) -> bool:
        """A directory opencode may have loaded: checked, marked used now, and True when it is new
        and kept (it is then to be verified: it may have read an older file)."""
        try:
            directory = check_directory(directory)
        except InvalidDirectory as exc:
            log.debug("opencode.directory_refused", reason=str(exc))
            return False
        if not self.remember(directory):
            return False
        self.unverified.add(directory)
        return True

    def remember(self, directory: str) -> bool:
        """Mark `directory` used now; True when it is new and kept. Beyond the bound the least
        recently used one is dropped: should a client come back to it, it is checked again then."""
        if directory in self._known:
            self._known.move_to_end(directory)
            return False
        self._known[directory] = None
        while len(self._known) > self._limit:
            oldest = next(d for d in self._known if d != self.default)
            self.forget(oldest)
            log.info("opencode.directory_dropped", directory=oldest, reason="limit", max_directories=self._limit)
        return directory in self._known

    def adopt_default(self, directory: str) -> None:
        """The directory opencode itself runs in replaces the one assumed."""
        try:
            directory = check_directory(directory)
        except InvalidDirectory as exc:
            log.warning("opencode.default_directory_refused", reason=str(exc))
            return
        if directory != self.default:
            self.forget(self.default)
            self.default = directory
            self._known[directory] = None
            self._known.move_to_end(directory)
            log.info("opencode.default_directory", directory=directory)

    def forget(self, directory: str) -> None:
        self._known.pop(directory, None)
        for held in (self.pending, self.deferred, self.unverified):
            held.discard(directory)
        for by_directory in (self._failures, self._retry_at, self._disposed_at):
            by_directory.pop(directory, None)

    def new_process(self) -> None:
        """A new opencode read the file as it started: nothing to reload, only to check; and what
        the old one failed at is not held against a directory any more."""
        self.pending = set()
        self._failures.clear()
        self._retry_at.clear()

    def due(self, directory: str) -> bool:
        """Whether a directory that failed has waited out its backoff."""
        return self._retry_at.get(directory, float("-inf")) <= self._clock()

    def failed(self, directory: str, exc: Exception, during: str) -> None:
        """Count an error of opencode's for `directory`: retry later, or drop it after the bound."""
        failures = self._failures.get(directory, 0) + 1
        error = str(exc) or type(exc).__name__
        if failures >= RELOAD_ATTEMPTS and directory != self.default:
            self.forget(directory)
            log.warning("opencode.directory_dropped", directory=directory, reason="reload_failed",
                        attempts=failures, error=error)
            return
        self._failures[directory] = failures
        delay = reload_retry_delay(failures)
        self._retry_at[directory] = self._clock() + delay
        log.warning("opencode.reload_failed", directory=directory, during=during, attempt=failures,
                    retry_in=delay, error=error)

    def succeeded(self, directory: str) -> None:
        self._failures.pop(directory, None)
        self._retry_at.pop(directory, None)

    def disposed(self, directory: str) -> None:
        self._disposed_at[directory] = self._clock()

    def disposed_within(self, directory: str, seconds: float) -> bool:
        at = self._disposed_at.get(directory)
        return at is not None and self._clock() - at < seconds
