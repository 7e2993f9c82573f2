"""Registered models the gateway says it doesn't have leave the registry.

A model registered without being listed (SIDECAR_UNLISTED_MODELS=probe or register, or a wildcard
route) may still be one the gateway can't serve. The gateway route tells of every answer
(sidecar/traffic.py); one that says "no such model" (a 400 or 404 whose reason names the model as
unknown) for a registered model has it dropped, so that it is not offered in opencode's picker
forever. Listed models are never dropped here: their gateway's list decides about them.

The route tells synchronously, as a request ends; the drop writes opencode's config, so it is
handed to one task (`run`) through a bounded set: a flood of refusals can't queue unbounded work.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import anyio
import structlog

from sidecar.naming import ModelRef

log = structlog.get_logger("sidecar.pruning")

# How gateways word "no such model": LiteLLM "Invalid model name passed in model=...", and with a
# wildcard route configured (measured, 1.8x) a 400 "You passed in model=x. There are no healthy
# deployments for this model" (a deployment cooling down is a 429 instead); OpenAI and vLLM "The
# model `x` does not exist", OpenRouter "x is not a valid model ID", Anthropic "model: x" with
# not_found_error, Ollama "model 'x' not found".
MODEL_UNKNOWN = re.compile(
    r"invalid model|unknown model|no such model|model_not_found|not a valid model|"
    r"no healthy deployments? for this model|model[^\n]{0,120}?"
    r"(?:not found|does not exist|doesn't exist|is not supported|not available)|not_found_error",
    re.IGNORECASE,
)
PENDING = 64


def says_model_unknown(status: int | None, reason: str | None) -> bool:
    """A gateway's answer that means "I have no such model" (pure)."""
    return status in (400, 404) and reason is not None and MODEL_UNKNOWN.search(reason) is not None


class RegistryPruner:
    def __init__(
        self,
        registered: Callable[[ModelRef], bool],
        unregister: Callable[[ModelRef], Awaitable[bool]],
        pending: int = PENDING,
    ) -> None:
        self._registered = registered
        self._unregister = unregister
        self._limit = pending
        self._pending: dict[ModelRef, str] = {}
        self._wake: anyio.Event | None = None  # made by `run`, inside the event loop

    def refused(self, gateway: str, model: str, status: int | None, reason: str) -> None:
        """The gateway route's word on a failed request (ModelTraffic's `on_error`)."""
        ref = ModelRef(gateway, model)
        if not says_model_unknown(status, reason) or not self._registered(ref):
            return
        if ref in self._pending or len(self._pending) >= self._limit:
            return  # waiting already, or many are: this model's next refusal tries again
        self._pending[ref] = reason
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake = anyio.Event()
            if not self._pending:
                await self._wake.wait()
            ref, reason = next(iter(self._pending.items()))
            if self._registered(ref) and await self._unregister(ref):
                log.warning("registry.dropped_refused", gateway=ref.provider_id, model=ref.model_id, reason=reason)
            del self._pending[ref]
