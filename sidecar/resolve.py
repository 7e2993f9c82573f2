"""Resolve the model an agent asks for: normalise it, register it if the gateway doesn't list it,
and wait until opencode can use it in the agent's directory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from sidecar.catalog import ModelInfo, invalid_model_id_reason
from sidecar.directories import InvalidDirectory
from sidecar.directories import check_directory as normal_directory
from sidecar.errors import HttpError
from sidecar.gateway.client import GatewayClient, GatewayError, ModelRejected
from sidecar.naming import InvalidModelName, ModelRef, normalise_model
from sidecar.opencode.apply import Applier, DirectoryUnusable
from sidecar.reconcile import Reconciler
from sidecar.registry import RegistryFull
from sidecar.settings import Settings

log = structlog.get_logger("sidecar.resolve")


@dataclass(frozen=True)
class Resolution:
    model: ModelInfo
    ref: ModelRef

    def as_json(self) -> dict[str, Any]:
        return {**self.model.model_dump(mode="json"), "opencode": self.ref.as_pair()}


def check_directory(directory: Any) -> str:
    try:
        return normal_directory(directory)
    except InvalidDirectory as exc:
        raise HttpError(400, str(exc)) from None


class Resolver:
    def __init__(
        self,
        settings: Settings,
        reconciler: Reconciler,
        applier: Applier,
        gateways: Mapping[str, GatewayClient],
        *,
        observe: Callable[[float, str], None] | None = None,
    ) -> None:
        self._observe = observe  # (seconds, outcome) of each resolve, for /metrics
        self._settings = settings
        self._reconciler = reconciler
        self._applier = applier
        self._gateways = gateways
        # A gateway's aliases name its own models; SIDECAR_MODEL_ALIASES any name at all.
        self._aliases = {
            alias: f"{gateway.id}/{target}" for gateway in settings.gateways for alias, target in gateway.aliases.items()
        } | settings.model_aliases

    def managed_providers(self) -> set[str]:
        """Ours, and those the operator configured: names in these stay as they are."""
        operator = self._reconciler.base_config.get("provider", {})
        return {*self._gateways, *(operator if isinstance(operator, dict) else ())}

    def normalise(self, requested: Any) -> ModelRef:
        try:
            ref = normalise_model(
                requested,
                default_provider=self._settings.default_provider,
                managed_providers=self.managed_providers(),
                owners=self._reconciler.owners,
                aliases=self._aliases,
            )
        except InvalidModelName as exc:
            raise HttpError(400, str(exc)) from None
        # The whole name was checked; `litellm/constructor` leaves a model id that was not.
        if (reason := invalid_model_id_reason(ref.model_id)) is not None:
            raise HttpError(400, f"model id {reason}")
        return ref

    async def resolve(self, requested: Any, directory: str | None = None) -> Resolution:
        started = time.perf_counter()
        outcome = "error"
        try:
            resolution = await self._resolve(requested, directory)
            outcome = "ok"
            return resolution
        except HttpError as exc:
            outcome = str(exc.status)
            raise
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started, outcome)

    async def _resolve(self, requested: Any, directory: str | None) -> Resolution:
        ref = self.normalise(requested)
        directory = check_directory(directory) if directory is not None else self._applier.default_directory
        gateway = self._gateways.get(ref.provider_id)
        if gateway is None:
            # The operator's own provider: opencode knows it from their config as it is.
            return Resolution(ModelInfo(id=ref.model_id, display_name=ref.model_id), ref)
        model = self._reconciler.known(ref)
        if model is None:
            if self._settings.probe_models:
                try:
                    await gateway.probe(ref.model_id)
                except ModelRejected as exc:
                    raise HttpError(400, str(exc)) from None
                except GatewayError as exc:
                    raise HttpError(502, str(exc)) from None
            try:
                model = await self._reconciler.register(ref)
            except RegistryFull as exc:
                raise HttpError(exc.status, exc.message) from None
        else:
            self._reconciler.note_used(ref)
        try:
            usable = await self._applier.wait_usable(directory, ref, self._settings.resolve_timeout)
        except DirectoryUnusable as exc:
            # The caller named it; what opencode can't open (a file, say) is the caller's to fix.
            raise HttpError(400, str(exc)) from None
        if not usable:
            raise HttpError(
                409,
                f"model {str(ref)!r} is registered, but directory {directory!r} was still generating "
                f"after {self._settings.resolve_timeout:g}s; opencode is reloaded there as soon as it is idle",
            )
        return Resolution(model, ref)
