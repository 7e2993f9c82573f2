"""What the `/gateway/<id>/` route saw of each model: requests by status, time to first byte, bytes
streamed back, and the last error. Pure bookkeeping, told by the route once a request is over, and
read by `/metrics` (at scrape time) and `/v1/status`.

The model name comes from the request body, so whoever holds opencode's token chooses it: the
number of series is bounded (the models a gateway lists get their own, a few others too, the rest
share `other`) and a name that is not a usable model id (too long, control characters) is escaped
and cut before it becomes a label."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from sidecar.catalog import MAX_MODEL_ID_LENGTH

# The labels that stand for more than one model: a request without a model, and the models past
# the bound. A model really named so shares their series, which costs a little precision only.
UNKNOWN = "unknown"
OTHER = "other"
NO_ANSWER = "none"  # the status label of a request that got no answer
CANCELLED = "cancelled"  # ... and of one whose client left before the answer began

# Time to first byte of a model's answer, in seconds: a cached or tiny model answers in tens of
# milliseconds, a large one thinking first in tens of seconds.
FIRST_BYTE_BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# Series of models a gateway does not list, per gateway, before the rest share `other`; and series
# in all, listed or not: a catalog that changes for months must not grow the scrape without end.
MAX_UNLISTED = 20
MAX_SERIES = 1_000
# A name that is not a usable model id is cut to this many characters once escaped.
MAX_ODD_NAME = 64
MAX_MESSAGE = 300


def escaped(text: str, limit: int) -> str:
    """`text` with each character that is not printable written as `\\xNN`/`\\uNNNN`, cut to
    `limit` characters (marked with `...`): safe as a label value and in a JSON report."""
    out = "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in text[:limit])
    return out if len(out) <= limit and len(text) <= limit else out[: limit - 3] + "..."


def model_label(name: str) -> str:
    """The name as it is when it could be a model id (catalog.py's rule), else escaped and cut."""
    if not isinstance(name, str) or not name.strip():
        return UNKNOWN
    if len(name) <= MAX_MODEL_ID_LENGTH and name.isprintable():
        return name
    return escaped(name, MAX_ODD_NAME)


def status_label(status: int | None) -> str:
    if status is None:
        return NO_ANSWER
    return str(status) if 100 <= status <= 599 else OTHER


@dataclass(frozen=True)
class LastError:
    status: int | None
    message: str
    at: float  # unix time

    def report(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message, "at": self.at}


@dataclass
class ModelSeries:
    """One (gateway, model)'s numbers, as Prometheus reads them."""

    requests: dict[str, int] = field(default_factory=dict)  # by status label
    errors: int = 0
    # Answers whose first byte came within each bucket's bound (not cumulative), the last for +Inf.
    first_byte: list[int] = field(default_factory=lambda: [0] * (len(FIRST_BYTE_BUCKETS) + 1))
    first_byte_sum: float = 0.0
    streamed_bytes: int = 0
    last_error: LastError | None = None

    def observe_first_byte(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(FIRST_BYTE_BUCKETS) if seconds <= bound), len(FIRST_BYTE_BUCKETS))
        self.first_byte[index] += 1
        self.first_byte_sum += seconds


class ModelTraffic:
    """The records, by (gateway, model label). `lists(gateway, model)` says whether the gateway's
    catalog holds the model; it is asked once per new name, not per request."""

    def __init__(
        self,
        gateways: Collection[str],
        lists: Callable[[str, str], bool],
        *,
        clock: Callable[[], float] = time.time,
        redact: Callable[[str], str] = lambda text: text,
        max_series: int = MAX_SERIES,
        max_unlisted: int = MAX_UNLISTED,
        on_error: Callable[[str, str, int | None, str], None] | None = None,
        on_answer: Callable[[str, str], None] | None = None,
    ) -> None:
        # Told (gateway, model as sent, status, reason) of each failed request: the registry's
        # pruner and the failing marks; and (gateway, model) of each answered one: the marks again.
        self._on_error, self._on_answer = on_error, on_answer
        self._gateways = tuple(gateways)
        self._lists, self._clock, self._redact = lists, clock, redact
        self._max_series, self._max_unlisted = max_series, max_unlisted
        self._series: dict[tuple[str, str], ModelSeries] = {}
        self._unlisted: dict[str, int] = {}

    def request_done(
        self,
        gateway: str,
        model: str,
        *,
        status: int | None,
        first_byte: float | None,
        streamed_bytes: int,
        error: str | None,
        cancelled: bool = False,
    ) -> None:
        series = self._series_for(gateway, model)
        # A user who stops a prompt closes the connection: counted, never held against the model.
        label = CANCELLED if cancelled and status is None else status_label(status)
        series.requests[label] = series.requests.get(label, 0) + 1
        if first_byte is not None and first_byte >= 0:
            series.observe_first_byte(first_byte)
        series.streamed_bytes += max(0, streamed_bytes)
        # A 200 whose stream then broke is a failure too: the route says so with `error`.
        answered_badly = status is not None and status >= 400
        if error is not None or answered_badly or (status is None and not cancelled):
            series.errors += 1
            reason = error or ("no answer" if status is None else f"HTTP {status}")
            series.last_error = LastError(status, escaped(self._redact(reason), MAX_MESSAGE), self._clock())
            if self._on_error is not None and gateway in self._gateways:
                self._on_error(gateway, model, status, series.last_error.message)
        elif status is not None and status < 400 and self._on_answer is not None and gateway in self._gateways:
            self._on_answer(gateway, model)

    def _series_for(self, gateway: str, model: str) -> ModelSeries:
        # The route only forwards to configured gateways; anything else is folded, not trusted.
        gateway = gateway if gateway in self._gateways else OTHER
        key = (gateway, model_label(model))
        series = self._series.get(key)
        if series is not None:
            return series
        if key[1] not in (UNKNOWN, OTHER):
            listed = self._lists(gateway, model)
            if len(self._series) >= self._max_series:
                key = (gateway, OTHER)
            elif not listed:
                if self._unlisted.get(gateway, 0) >= self._max_unlisted:
                    key = (gateway, OTHER)
                else:
                    self._unlisted[gateway] = self._unlisted.get(gateway, 0) + 1
        # `unknown` and `other` are one series per gateway, past the bound too.
        return self._series.setdefault(key, ModelSeries())

    def series(self) -> Iterator[tuple[str, str, ModelSeries]]:
        """Each series as (gateway, model label, numbers), in a stable order."""
        for (gateway, model), numbers in sorted(self._series.items()):
            yield gateway, model, numbers

    def report(self) -> dict[str, dict[str, dict[str, Any]]]:
        """`/v1/status`'s `traffic`: per gateway (every configured one), per model."""
        report: dict[str, dict[str, dict[str, Any]]] = {gateway: {} for gateway in self._gateways}
        for gateway, model, numbers in self.series():
            report.setdefault(gateway, {})[model] = {
                "requests": sum(numbers.requests.values()),
                "errors": numbers.errors,
                "last_error": None if numbers.last_error is None else numbers.last_error.report(),
            }
        return report
