"""`models().list(runtime)`: any runtime's models in the Anthropic Models API shape.

The sync and the async client run the same listings (`runtimes.py`); they differ only in how a
request is sent and how a retry waits. Each `list()` call opens and closes its own HTTP
connection pool, so a client needs no closing.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx
import structlog

from sidecar.catalog import ModelList
from sidecar.retry import RetryPolicy, Transient, retrying, retrying_sync
from sidecar.sdk.config import Options, resolve_options
from sidecar.sdk.errors import (
    MalformedResponseError,
    ModelsError,
    UnavailableError,
    error_for_status,
    where,
)
from sidecar.sdk.runtimes import Listing, listing_for

log = structlog.get_logger("sidecar.sdk")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header: delay-seconds or an HTTP date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - now).total_seconds())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


class _Policy:
    """What the sync and the async client share: turning an outcome into an error, and the retries.

    A 429 waits what its Retry-After says, unless that is longer than `max_retry_after`; a 429
    without one, a 5xx, a timeout or a failed connection waits the usual backoff with jitter.
    """

    def __init__(self, options: Options, rng: random.Random | None, clock: Clock) -> None:
        self.options = options
        self.clock = clock
        self.retries = RetryPolicy(
            max_retries=options.max_retries, max_retry_after=options.max_retry_after, rng=rng, scheduled=_log_retry
        )

    def checked(self, runtime: str, response: httpx.Response) -> httpx.Response:
        """The response when it is a success, else its typed error raised."""
        if response.is_success:
            return response
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        raise error_for_status(runtime, response, retry_after=retry_after, secrets=self.options.secrets())

    def failed(self, runtime: str, request: httpx.Request, exc: httpx.HTTPError) -> ModelsError:
        if isinstance(exc, httpx.TimeoutException):
            return UnavailableError(runtime, f"no answer from {where(request)} within {self.options.timeout:g} s")
        if isinstance(exc, httpx.DecodingError):
            return MalformedResponseError(runtime, f"the answer from {where(request)} could not be decoded")
        return UnavailableError(runtime, f"could not reach {where(request)} ({type(exc).__name__})")

    def http_options(self) -> dict[str, Any]:
        return {"timeout": httpx.Timeout(self.options.timeout), "follow_redirects": False}


def _log_retry(error: Transient, attempt: int, delay: float) -> None:
    runtime = error.runtime if isinstance(error, ModelsError) else None
    log.warning("sdk.retry_scheduled", runtime=runtime, attempt=attempt, delay=round(delay, 3), error=str(error))


class Models:
    """Lists a runtime's models. Make one with `models(...)`; see there for the options."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Clock = _utcnow,
        **options: Any,
    ) -> None:
        self.options = resolve_options(os.environ if env is None else env, **options)
        self._policy = _Policy(self.options, rng, clock)
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Models({self.options!r})"

    def list(self, runtime: str, *, limit: int | None = None) -> ModelList:
        """The runtime's models, at most `limit` of them (all by default); `has_more` says if more exist."""
        listing = listing_for(runtime, self.options, limit)
        with httpx.Client(transport=self._transport, **self._policy.http_options()) as http:
            listed = _drive(listing, lambda request: self._send(http, runtime, request))
        log.debug("sdk.listed", runtime=runtime, count=len(listed.data), has_more=listed.has_more)
        return listed

    def _send(self, http: httpx.Client, runtime: str, request: httpx.Request) -> httpx.Response:
        def attempt() -> httpx.Response:
            try:
                response = http.send(request)
            except httpx.HTTPError as exc:
                error = self._policy.failed(runtime, request, exc)
            else:
                return self._policy.checked(runtime, response)
            # Raised out here, so the error carries no httpx traceback as its context.
            raise error

        return retrying_sync(attempt, self._policy.retries, self._sleep)


class AsyncModels:
    """The async twin of `Models`: `await amodels().list(runtime)`."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
        clock: Clock = _utcnow,
        **options: Any,
    ) -> None:
        self.options = resolve_options(os.environ if env is None else env, **options)
        self._policy = _Policy(self.options, rng, clock)
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"AsyncModels({self.options!r})"

    async def list(self, runtime: str, *, limit: int | None = None) -> ModelList:
        """The runtime's models, at most `limit` of them (all by default); `has_more` says if more exist."""
        listing = listing_for(runtime, self.options, limit)
        async with httpx.AsyncClient(transport=self._transport, **self._policy.http_options()) as http:
            listed = await _adrive(listing, lambda request: self._send(http, runtime, request))
        log.debug("sdk.listed", runtime=runtime, count=len(listed.data), has_more=listed.has_more)
        return listed

    async def _send(self, http: httpx.AsyncClient, runtime: str, request: httpx.Request) -> httpx.Response:
        async def attempt() -> httpx.Response:
            try:
                response = await http.send(request)
            except httpx.HTTPError as exc:
                error = self._policy.failed(runtime, request, exc)
            else:
                return self._policy.checked(runtime, response)
            # Raised out here, so the error carries no httpx traceback as its context.
            raise error

        return await retrying(attempt, self._policy.retries, self._sleep)


def _drive(listing: Listing, send: Callable[[httpx.Request], httpx.Response]) -> ModelList:
    """Run a listing: send each request it yields, hand back the answer or throw the error in."""
    try:
        request = next(listing)
        while True:
            try:
                response = send(request)
            except ModelsError as exc:
                request = listing.throw(exc)
            else:
                request = listing.send(response)
    except StopIteration as done:
        return done.value


async def _adrive(listing: Listing, send: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> ModelList:
    try:
        request = next(listing)
        while True:
            try:
                response = await send(request)
            except ModelsError as exc:
                request = listing.throw(exc)
            else:
                request = listing.send(response)
    except StopIteration as done:
        return done.value


def models(**options: Any) -> Models:
    """A client that lists any runtime's models in the Anthropic Models API shape.

    Options (keyword arguments override environment variables, which override the defaults):

    - `anthropic_api_key` (`ANTHROPIC_API_KEY`), `anthropic_base_url` (`ANTHROPIC_BASE_URL`,
      default `https://api.anthropic.com`), `anthropic_version` (default `2023-06-01`);
    - `cursor_api_key` (`CURSOR_API_KEY`), `cursor_base_url` (`CURSOR_BASE_URL`, default
      `https://api.cursor.com`), `cursor_api_version` (`CURSOR_API_VERSION`: `auto`, the
      default, asks v1 and falls back to v0 when v1 answers 404; or `v1`, `v0`);
    - `sidecar_url` (`SIDECAR_URL`, default `http://127.0.0.1:4097`), `sidecar_api_key`
      (`SIDECAR_API_KEY`); or `gateway_url` to read an OpenAI-compatible gateway directly,
      with `gateway_api_key` (`SIDECAR_GATEWAY_API_KEY`);
    - `timeout` (seconds per request, default 30), `max_retries` (default 2: 429, 5xx,
      timeouts and failed connections), `max_retry_after` (the longest Retry-After waited
      for, default 60 s);
    - seams for tests: `env` (instead of `os.environ`), `transport`, `sleep`, `rng`, `clock`.
    """
    return Models(**options)


def amodels(**options: Any) -> AsyncModels:
    """The async twin of `models()`, with the same options (`transport` is an async one)."""
    return AsyncModels(**options)
