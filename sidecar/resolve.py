"""Resolve the model an agent asks for: normalise it, register it if the gateway doesn't list it,
and wait until opencode can use it in the agent's directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import structlog

from sidecar.catalog import ModelInfo
from sidecar.gateway.client import GatewayClient, GatewayError, ModelRejected
from sidecar.naming import InvalidModelName, ModelRef, normalise_model
from sidecar.opencode.apply import Applier
from sidecar.reconcile import Reconciler
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.resolve")


class ResolveError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Resolution:
    model: ModelInfo
    ref: ModelRef

    def as_json(self) -> dict[str, Any]:
        return {**self.model.model_dump(mode="json"), "opencode": self.ref.as_pair()}


def check_directory(directory: Any) -> str:
    if not isinstance(directory, str) or not directory or not directory.isprintable():
        raise ResolveError(400, "directory must be an absolute path")
    if not os.path.isabs(directory) or len(directory) > 4096:
        raise ResolveError(400, "directory must be an absolute path")
    return directory


class Resolver:
    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        applier: Applier,
        gateway: GatewayClient,
    ) -> None:
        self._settings = settings
        self._reconciler = reconciler
        self._applier = applier
        self._gateway = gateway

    def managed_providers(self) -> set[str]:
        """Ours, and those the operator configured: names in these stay as they are."""
        operator = self._reconciler.base_config.get("provider", {})
        return {self._settings.provider_id, *(operator if isinstance(operator, dict) else ())}

    def normalise(self, requested: Any) -> ModelRef:
        try:
            return normalise_model(
                requested,
                default_provider=self._settings.provider_id,
                managed_providers=self.managed_providers(),
                known_ids=self._reconciler.catalog,
                aliases=self._settings.model_aliases,
            )
        except InvalidModelName as exc:
            raise ResolveError(400, str(exc)) from None

    async def resolve(self, requested: Any, directory: str | None = None) -> Resolution:
        ref = self.normalise(requested)
        directory = check_directory(directory) if directory is not None else self._applier.default_directory
        if ref.provider_id != self._settings.provider_id:
            # The operator's own provider: opencode knows it from their config as it is.
            return Resolution(ModelInfo(id=ref.model_id, display_name=ref.model_id), ref)
        model = self._reconciler.catalog.get(ref.model_id)
        if model is None:
            if self._settings.probe_models:
                try:
                    await self._gateway.probe(ref.model_id)
                except ModelRejected as exc:
                    raise ResolveError(400, str(exc)) from None
                except GatewayError as exc:
                    raise ResolveError(502, str(exc)) from None
            model = await self._reconciler.register(ref.model_id)
        if not await self._applier.wait_usable(directory, ref.model_id, self._settings.resolve_timeout):
            raise ResolveError(
                409,
                f"model {str(ref)!r} is registered, but directory {directory!r} was still generating "
                f"after {self._settings.resolve_timeout:g}s; opencode is reloaded there as soon as it is idle",
            )
        return Resolution(model, ref)
