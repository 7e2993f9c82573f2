"""Polls a gateway's model list over HTTP, with timeouts and retries."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable

import anyio
import httpx
import structlog

from sidecar.backoff import retry_delay
from sidecar.catalog import Catalog
from sidecar.reasons import server_reason
from sidecar.gateway.openai_list import MalformedModelList, parse_model_list
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.gateway")

# A model list is small; a gateway that sends more is not answering the question we asked.
MAX_LIST_BYTES = 16 * 1024 * 1024


class GatewayError(Exception):
    """The gateway could not give a model list; the message is safe to log."""


class _Retryable(GatewayError):
    pass


class ModelRejected(GatewayError):
    """The gateway refused a probe request for a model; the message carries its reason."""


class GatewayClient:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._rng = rng
        headers = {"accept": "application/json"}
        if settings.gateway_api_key is not None:
            headers["authorization"] = f"Bearer {settings.gateway_api_key.get_secret_value()}"
        self._http = httpx.AsyncClient(
            base_url=settings.gateway_base,
            headers=headers,
            timeout=httpx.Timeout(settings.gateway_timeout),
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch_catalog(self) -> Catalog:
        """The gateway's chat models; retries transient failures, then raises GatewayError."""
        attempts = self._settings.gateway_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._fetch_once()
            except _Retryable as exc:
                if attempt == attempts:
                    raise GatewayError(str(exc)) from None
                delay = retry_delay(attempt, rng=self._rng)
                log.warning(
                    "gateway.retry_scheduled", attempt=attempt, delay=round(delay, 3), error=str(exc)
                )
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _fetch_once(self) -> Catalog:
        try:
            response = await self._http.get("/v1/models")
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self._settings.gateway_timeout}s") from None
        except httpx.HTTPError as exc:
            raise _Retryable(f"request failed: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"gateway answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise GatewayError(f"gateway answered HTTP {response.status_code}")
        if len(response.content) > MAX_LIST_BYTES:
            raise GatewayError(f"model list larger than {MAX_LIST_BYTES} bytes")
        try:
            parsed = parse_model_list(json.loads(response.content))
        except (ValueError, RecursionError) as exc:
            message = str(exc) if isinstance(exc, MalformedModelList) else "body is not JSON"
            raise GatewayError(f"malformed model list: {message}") from None
        if parsed.rejected:
            log.debug("gateway.entries_rejected", count=len(parsed.rejected), reasons=parsed.rejected[:10])
        if parsed.skipped_non_chat:
            log.debug(
                "gateway.non_chat_skipped", count=len(parsed.skipped_non_chat), first=parsed.skipped_non_chat[:10]
            )
        return Catalog(parsed.models)

    async def probe(self, model_id: str) -> None:
        """Ask the gateway to accept `model_id` with the smallest chat request there is.

        Raises ModelRejected when it refuses the model, GatewayError when it can't be asked.
        """
        body = {"model": model_id, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        try:
            response = await self._http.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise GatewayError(f"the gateway could not be asked: {type(exc).__name__}") from None
        if response.is_success:
            return
        if 400 <= response.status_code < 500:
            reason = server_reason(response, self._settings.secrets()) or f"HTTP {response.status_code}"
            raise ModelRejected(f"the gateway rejected model {model_id!r}: {reason}")
        raise GatewayError(f"the gateway answered HTTP {response.status_code} to a probe of {model_id!r}")

