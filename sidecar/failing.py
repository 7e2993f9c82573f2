"""Listed models the gateway refuses, found before a user's session fails on them.

A model the gateway lists may still not work: the gateway has no deployment of that name upstream,
the key's team is not allowed it, or every deployment is down. The gateway route tells of every
answer (sidecar/traffic.py); a refusal that says one of these of a listed model marks it failing.
While marked, `/v1/models` shows it with the gateway's reason, and the resolver refuses it at once
with that reason (the pass-through asks the resolver before opencode sees a prompt), so the next
session does not end in `session.error`. A background loop retries each one with a one-token
probe, with backoff, a few at a time, and clears it when the gateway answers; a request through
the gateway route that succeeds clears it too, and so does the gateway's list dropping it.

A rate limit (429, LiteLLM's cooldown) or a 5xx is the gateway's passing trouble, not the model's:
never a reason to mark it. Pure bookkeeping here, with an injected clock; `retry_failing` is the
loop, handed a probe.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import anyio
import structlog

from sidecar.naming import ModelRef
from sidecar.pruning import says_model_unknown
from sidecar.traffic import MAX_MESSAGE, escaped, model_label

log = structlog.get_logger("sidecar.failing")

# Models marked at once: only listed ones are, so the catalog bounds them already; this bounds the
# metric's series and the report if a gateway lists thousands that all break.
MAX_FAILING = 1_000
# Probes in flight at once, and how long the loop sleeps at most between looks at what is due.
RETRY_CONCURRENCY = 4
RETRY_TICK = 1.0


class Kind(StrEnum):
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"
    UNAVAILABLE = "unavailable"

    @property
    def http_status(self) -> int:
        return {Kind.NOT_FOUND: 404, Kind.NOT_ALLOWED: 403, Kind.UNAVAILABLE: 503}[self]


# LiteLLM: 400 "There are no healthy deployments for this model" (every deployment failed its
# checks or none is configured under a wildcard); a deployment cooling down is a 429 instead.
NO_DEPLOYMENT = re.compile(r"no healthy deployments? for this model", re.IGNORECASE)
# LiteLLM: 401 "key not allowed to access model", "team not allowed to access model" (also with
# 403 in newer versions); OpenAI: 403 "not allowed to sample from this model"; Anthropic/Bedrock
# permission_error "does not have access to model", "access denied ... model".
NOT_ALLOWED = re.compile(
    r"not allowed to (?:access|call|use|sample from)[^\n]{0,40}model|"
    r"(?:does not|doesn't|do not|don't) have access to[^\n]{0,40}model|model[^\n]{0,60}access denied|"
    r"access denied[^\n]{0,60}model",
    re.IGNORECASE,
)


def classify(status: int | None, reason: str | None) -> Kind | None:
    """The gateway's answer as a reason to mark the model failing, or None when it is no such
    reason (a success, a rate limit, a 5xx, no answer, a refusal about something else) (pure)."""
    if status is None or reason is None or status == 429 or not 400 <= status < 500:
        return None
    if status in (400, 404) and NO_DEPLOYMENT.search(reason):
        return Kind.UNAVAILABLE
    if status in (401, 403) and NOT_ALLOWED.search(reason):
        return Kind.NOT_ALLOWED
    if says_model_unknown(status, reason):
        return Kind.NOT_FOUND
    return None


def refusal_in_event(event: dict[str, Any]) -> tuple[str, str, int, str] | None:
    """(gateway, model, status, reason) of a prompt the gateway refused, from an event of opencode's
    `/global/event` stream, else None (pure). `session.error` names no model; the assistant
    message it ends (`message.updated`) has the model and the same APIError with its status."""
    payload = event.get("payload")
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict) or payload.get("type") != "message.updated":  # type: ignore[union-attr]
        return None
    info = properties.get("info")
    error = info.get("error") if isinstance(info, dict) else None
    data = error.get("data") if isinstance(error, dict) and error.get("name") == "APIError" else None
    if not isinstance(data, dict) or not isinstance(info, dict):
        return None
    gateway, model, status, reason = info.get("providerID"), info.get("modelID"), data.get("statusCode"), data.get("message")
    if not (isinstance(gateway, str) and isinstance(model, str) and isinstance(reason, str)):
        return None
    if not isinstance(status, int) or isinstance(status, bool):
        return None
    return gateway, model, status, reason


@dataclass(frozen=True)
class Failing:
    kind: Kind
    status: int
    reason: str
    since: float  # unix time of the first refusal
    attempts: int = 0  # background retries that failed since
    next_try: float = 0.0

    def report(self) -> dict[str, Any]:
        """The fields a `/v1/models` entry gets, and `/v1/status` shows."""
        return {"status": "failing", "failing": {"kind": str(self.kind), "reason": self.reason, "since": self.since}}

    def message(self, ref: ModelRef) -> str:
        return (
            f"model {str(ref)!r} is failing at gateway {ref.provider_id!r} ({self.kind.replace('_', ' ')}): "
            f"{self.reason}; it is retried in the background and served again once the gateway "
            "accepts it (GET /v1/models shows its status)"
        )


def retry_delay(attempts: int, initial: float, cap: float) -> float:
    """Seconds before the next retry after `attempts` failed ones: doubling from `initial` (pure)."""
    return min(cap, initial * 2 ** max(0, min(attempts, 30)))


class FailingModels:
    """The marks, by model. `listed(ref)`: whether the gateway's catalog holds it now."""

    def __init__(
        self,
        listed: Callable[[ModelRef], bool],
        *,
        retry_initial: float = 30.0,
        retry_max: float = 600.0,
        clock: Callable[[], float] = time.time,
        redact: Callable[[str], str] = lambda text: text,
        max_failing: int = MAX_FAILING,
    ) -> None:
        self._listed, self._clock, self._redact = listed, clock, redact
        self._initial, self._cap, self._max = retry_initial, retry_max, max_failing
        self._marks: dict[ModelRef, Failing] = {}
        # Bumped on each change: the answers of /v1/models are cached until it moves.
        self.version = 0

    def get(self, ref: ModelRef) -> Failing | None:
        return self._marks.get(ref)

    def __len__(self) -> int:
        return len(self._marks)

    def refused(self, gateway: str, model: str, status: int | None, reason: str) -> None:
        """The gateway route's word on a failed request (ModelTraffic's `on_error`)."""
        kind = classify(status, reason)
        if kind is None or status is None:
            return
        ref = ModelRef(gateway, model)
        if ref in self._marks or len(self._marks) >= self._max or not self._listed(ref):
            return  # marked already (its retries keep their pace), or not a listed model
        now = self._clock()
        mark = Failing(kind, status, escaped(self._redact(reason), MAX_MESSAGE), now, 0, now + self._initial)
        self._marks[ref] = mark
        self.version += 1
        log.warning("model.failing", gateway=gateway, model=model, kind=str(kind), status=status, reason=mark.reason)

    def note_event(self, event: dict[str, Any]) -> None:
        """An event of opencode's stream (the applier's `on_event`): a prompt's refusal marks too,
        which is how a sidecar without key custody learns of one."""
        if (refusal := refusal_in_event(event)) is not None:
            self.refused(*refusal)

    def answered(self, gateway: str, model: str) -> None:
        """A request for the model through the gateway route succeeded (ModelTraffic's `on_answer`)."""
        self.clear(ModelRef(gateway, model), "answered")

    def clear(self, ref: ModelRef, why: str) -> None:
        mark = self._marks.pop(ref, None)
        if mark is not None:
            self.version += 1
            log.info("model.failing_cleared", gateway=ref.provider_id, model=ref.model_id, why=why,
                     failing_for=round(self._clock() - mark.since, 3))

    def retry_failed(self, ref: ModelRef, status: int | None, reason: str) -> None:
        """A background retry did not get an answer: the next one waits longer. A refusal of
        another kind (now not allowed rather than not found) replaces the reason shown."""
        mark = self._marks.get(ref)
        if mark is None:
            return
        attempts = mark.attempts + 1
        delay = retry_delay(attempts, self._initial, self._cap)
        kind = classify(status, reason)
        if kind is not None and status is not None:
            mark = replace(mark, kind=kind, status=status, reason=escaped(self._redact(reason), MAX_MESSAGE))
            self.version += 1
        self._marks[ref] = replace(mark, attempts=attempts, next_try=self._clock() + delay)

    def due(self, limit: int) -> list[ModelRef]:
        """Up to `limit` marked models whose retry is due, the longest waiting first; marks of
        models the gateway no longer lists are cleared on the way."""
        for ref in [ref for ref in self._marks if not self._listed(ref)]:
            self.clear(ref, "unlisted")
        now = self._clock()
        waiting = [(ref, mark) for ref, mark in self._marks.items() if mark.next_try <= now]
        waiting.sort(key=lambda item: (item[1].next_try, item[0].provider_id, item[0].model_id))
        return [ref for ref, _ in waiting[:limit]]

    @property
    def first_retry(self) -> float:
        """Seconds from a mark to its first retry."""
        return self._initial

    def next_due(self) -> float | None:
        return min((mark.next_try for mark in self._marks.values()), default=None)

    def marks(self) -> list[tuple[ModelRef, Failing]]:
        return sorted(self._marks.items(), key=lambda item: (item[0].provider_id, item[0].model_id))

    def failing_series(self) -> list[tuple[str, str, str]]:
        """For /metrics: (gateway, model label, kind) of each mark."""
        return [(ref.provider_id, model_label(ref.model_id), str(mark.kind)) for ref, mark in self.marks()]

    def report(self) -> dict[str, dict[str, dict[str, Any]]]:
        """`/v1/status`'s `failing`: per gateway, per model."""
        report: dict[str, dict[str, dict[str, Any]]] = {}
        for ref, mark in self.marks():
            report.setdefault(ref.provider_id, {})[ref.model_id] = {
                **mark.report()["failing"], "status": mark.status, "retries": mark.attempts, "next_retry": mark.next_try,
            }
        return report


# A probe's outcome: None when the gateway accepted the model; else (status or None, reason).
Probe = Callable[[ModelRef], Awaitable[tuple[int | None, str] | None]]


async def retry_failing(
    failing: FailingModels,
    probe: Probe,
    *,
    concurrency: int = RETRY_CONCURRENCY,
    tick: float = RETRY_TICK,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> None:
    """Forever: probe the marked models that are due, `concurrency` at most at once."""
    while True:
        due = failing.due(concurrency)
        if due:
            async with anyio.create_task_group() as group:
                for ref in due:
                    group.start_soon(_retry_one, failing, probe, ref)
            continue
        upcoming = failing.next_due()
        if upcoming is None:
            # Nothing marked: a mark made meanwhile is first due this long after it is made, so
            # sleeping as long delays no retry (and spares an idle sidecar a wake-up a second).
            await sleep(max(tick, failing.first_retry))
            continue
        await sleep(max(0.0, min(tick, upcoming - clock())))


def probe_served(outcome: tuple[int | None, str] | None) -> bool:
    """Whether a probe's outcome shows the gateway serving the model (pure): it answered, or it
    refused the request for something else than the model (a gateway that wants more than one
    token, say). A rate limit, a timeout, the key refused, a 5xx: nothing learnt, still failing."""
    if outcome is None:
        return True
    status, reason = outcome
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429) and classify(status, reason) is None


async def _retry_one(failing: FailingModels, probe: Probe, ref: ModelRef) -> None:
    outcome = await probe(ref)
    if probe_served(outcome):
        failing.clear(ref, "retried")
    elif outcome is not None:
        failing.retry_failed(ref, *outcome)


class ListedStatuses:
    """The marks as `/v1/models` shows them, by listed id (sidecar.http.view.ModelStatuses)."""

    def __init__(self, failing: FailingModels, ref_of: Callable[[str], ModelRef | None]) -> None:
        self._failing, self._ref_of = failing, ref_of

    @property
    def version(self) -> int:
        return self._failing.version

    def of(self, listed_id: str) -> dict[str, Any] | None:
        if not len(self._failing):
            return None  # the usual case, without a lookup per entry
        ref = self._ref_of(listed_id)
        mark = self._failing.get(ref) if ref is not None else None
        return mark.report() if mark is not None else None
