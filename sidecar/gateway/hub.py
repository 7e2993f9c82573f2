"""Fleet mode: a gateway whose list comes from a hub sidecar (`catalog_url`) instead of the gateway.

The list is asked of `GET {catalog_url}/v1/catalogs/{catalog_gateway}` with the version held in
If-None-Match; the sync loop asks again with `?wait=<poll interval>` as soon as each answer
arrives, so the hub holds the request until its list changes. A 304 gives back the catalog held,
the same object, so nothing downstream does per-model work. Probes and model traffic still go to
the gateway itself (the GatewayClient this extends); the hub's key goes to the hub alone.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpx
import structlog

from sidecar.catalog import Catalog
from sidecar.gateway.client import MAX_LIST_OBJECTS, MAX_PROBE_BYTES, GatewayClient, GatewayError
from sidecar.gateway.config import Gateway
from sidecar.gateway.hub_answer import MAX_VERSION_LENGTH, HubCatalog, MalformedHubAnswer, etag_of, parse_hub_answer
from sidecar.lists.entries import MAX_LIST_BYTES
from sidecar.reasons import reason_in
from sidecar.retry import RetryPolicy, Transient, retrying

log = structlog.get_logger("sidecar.hub")

# The longest a hub holds a long-poll (the contract's ?wait bound).
MAX_WAIT = 300.0
# A Retry-After past this (a hub's 503 before its first list) is not waited for; our backoff is.
MAX_RETRY_AFTER = 60.0


class _HubRetryable(GatewayError, Transient):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubFedClient(GatewayClient):
    """A gateway's list from its hub; everything else (probes, the format) the gateway's own."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        timeout: float,
        retries: int,
        max_models: int,
        secrets: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        hub_transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            gateway, timeout=timeout, retries=retries, max_models=max_models, secrets=secrets,
            transport=transport, sleep=sleep, rng=rng,
        )
        assert gateway.catalog_url is not None and gateway.catalog_gateway is not None
        self.catalog_from = gateway.catalog_url
        self._url = f"{gateway.catalog_url}/v1/catalogs/{gateway.catalog_gateway}"
        self._hub_id = gateway.catalog_gateway
        self._hub_retries = RetryPolicy(
            max_retries=retries, max_retry_after=MAX_RETRY_AFTER, rng=rng, scheduled=self._hub_retry_scheduled
        )
        self._held: HubCatalog | None = None
        # Answers are taken in the order their requests went out: a long-poll sent before a
        # refresh's request and answered after it never puts an older list back.
        self._sent = 0
        self._taken = 0
        headers = {"accept": "application/json"}
        if gateway.catalog_api_key is not None:
            headers["authorization"] = f"Bearer {gateway.catalog_api_key.get_secret_value()}"
        # Its own client: the gateway's key never goes to the hub, nor the hub's to the gateway.
        self._hub = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout), transport=hub_transport, follow_redirects=False
        )

    @property
    def version(self) -> str | None:
        """The hub's version of the list held."""
        return None if self._held is None else self._held.version

    async def aclose(self) -> None:
        await self._hub.aclose()
        await super().aclose()

    async def fetch_catalog(self) -> Catalog:
        """Asked at once (a refresh, the first poll): the hub answers without holding the request."""
        return await self.long_poll(0.0)

    async def long_poll(self, wait: float) -> Catalog:
        """The hub's list once it differs from the one held, or the one held after `wait` seconds;
        transient failures retried with the usual backoff, then GatewayError."""
        try:
            return await retrying(lambda: self._ask(wait), self._hub_retries, self._sleep)
        except _HubRetryable as exc:
            raise GatewayError(str(exc)) from None

    def _hub_retry_scheduled(self, error: Transient, attempt: int, delay: float) -> None:
        log.warning("hub.retry_scheduled", gateway=self.gateway.id, hub=self.catalog_from, attempt=attempt,
                    delay=round(delay, 3), error=str(error))

    async def _ask(self, wait: float) -> Catalog:
        # The contract's range (0-300 s), as a plain decimal: a longer poll interval holds 300 s at a time.
        wait = round(min(wait, MAX_WAIT), 3)
        self._sent += 1
        order, held = self._sent, self._held
        headers = {"if-none-match": etag_of(held.version)} if held is not None else {}
        params = {"wait": f"{wait:.3f}".rstrip("0").rstrip(".")} if wait > 0 and held is not None else None
        # The hub sends nothing while it holds the request: the read deadline is the wait and more.
        deadline = wait + self._timeout
        try:
            with anyio.fail_after(deadline):
                got = await self._read(headers, params, httpx.Timeout(self._timeout, read=deadline))
        except (TimeoutError, httpx.TimeoutException):
            raise _HubRetryable(f"the hub timed out after {deadline:g}s") from None
        except httpx.HTTPError as exc:
            raise _HubRetryable(f"the hub could not be asked: {type(exc).__name__}") from None
        if got is None or order < self._taken:
            if self._held is None:
                raise GatewayError("the hub answered 304 Not Modified to a request for a list it never gave")
            return self._held.catalog
        self._taken, self._held = order, got
        self.routes, self.unkept = got.routes, got.unkept
        log.info("hub.catalog_received", gateway=self.gateway.id, hub=self.catalog_from, version=got.version,
                 models=len(got.catalog))
        return got.catalog

    async def _read(
        self, headers: dict[str, str], params: dict[str, str] | None, timeout: httpx.Timeout
    ) -> HubCatalog | None:
        """The hub's new list, or None when it has not changed."""
        async with self._hub.stream("GET", self._url, params=params, headers=headers, timeout=timeout) as response:
            status = response.status_code
            if status == 304 and headers:
                return None
            if status == 200 and self._held is not None and response.headers.get("etag") == etag_of(self._held.version):
                return None  # the version held (a refresh's answer already taken): not read again
            if status == 429 or status >= 500:
                raise _HubRetryable(f"the hub answered HTTP {status}{await self._reason(response)}",
                                    _retry_after(response.headers.get("retry-after")))
            if response.has_redirect_location:
                raise GatewayError(f"the hub redirected to another address (HTTP {status}); not followed")
            if status == 404:
                raise GatewayError(f"the hub has no catalog of gateway {self._hub_id!r} (HTTP 404)"
                                   f"{await self._reason(response)}; check catalog_gateway")
            if status in (401, 403):
                raise GatewayError(f"the hub refused this sidecar's key (HTTP {status}); check catalog_api_key_env "
                                   "(SIDECAR_CATALOG_API_KEY) against the hub's SIDECAR_API_KEY")
            if status != 200:
                raise GatewayError(f"the hub answered HTTP {status}{await self._reason(response)}")
            body = await _bounded(response)
        objects = body.count(b"{")
        if objects > MAX_LIST_OBJECTS:
            raise GatewayError(f"malformed catalog from the hub: {objects} JSON objects, more than {MAX_LIST_OBJECTS}")
        try:
            return parse_hub_answer(body, self._hub_id, max_models=self._max_models, wants=self.gateway.wants)
        except MalformedHubAnswer as exc:
            raise GatewayError(f"malformed catalog from the hub: {exc}") from None

    async def _reason(self, response: httpx.Response) -> str:
        """The hub's own error message (secrets blanked, shortened), as `: message`."""
        content = bytearray()
        async for chunk in response.aiter_bytes():
            content += chunk[: MAX_PROBE_BYTES - len(content)]
            if len(content) >= MAX_PROBE_BYTES:
                break
        reason = reason_in(bytes(content), self._secrets)
        return f": {reason}" if reason else ""


async def _bounded(response: httpx.Response) -> bytearray:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_LIST_BYTES:
        raise GatewayError(f"malformed catalog from the hub: larger than {MAX_LIST_BYTES} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        if len(body) + len(chunk) > MAX_LIST_BYTES:
            raise GatewayError(f"malformed catalog from the hub: larger than {MAX_LIST_BYTES} bytes")
        body += chunk
    return body


def _retry_after(value: str | None) -> float | None:
    """A Retry-After in seconds; a date or anything else is left to our backoff."""
    if value is None or len(value) > MAX_VERSION_LENGTH:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None
