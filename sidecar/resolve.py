"""Resolve the model an agent asks for: normalise it, match it to a listed model the way people
write names (sidecar/matching.py), accept an unlisted one only as SIDECAR_UNLISTED_MODELS says
(or when a wildcard route of its gateway covers it), and wait until opencode can use it in the
agent's directory."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import structlog

from sidecar.catalog import ModelInfo, invalid_model_id_reason
from sidecar.directories import InvalidDirectory
from sidecar.directories import check_directory as normal_directory
from sidecar.errors import HttpError
from sidecar.failing import FailingModels
from sidecar.gateway.client import GatewayClient, GatewayError, ModelRejected
from sidecar.matching import Listed, Match, covered_by_route
from sidecar.naming import InvalidModelName, ModelRef, expanded_name, normalise_model
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
        failing: FailingModels | None = None,
    ) -> None:
        self._observe = observe  # (seconds, outcome) of each resolve, for /metrics
        self._failing = failing  # listed models the gateway refuses: refused here with its reason
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
        return self._normalised(requested)[0]

    def _normalised(self, requested: Any) -> tuple[ModelRef, str]:
        """The reference, and the name it came from (its alias expanded)."""
        try:
            name = expanded_name(requested, self.managed_providers(), self._aliases)
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
        return ref, name

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
        ref, name = self._normalised(requested)
        directory = check_directory(directory) if directory is not None else self._applier.default_directory
        gateway = self._gateways.get(ref.provider_id)
        if gateway is None:
            # The operator's own provider: opencode knows it from their config as it is.
            return Resolution(ModelInfo(id=ref.model_id, display_name=ref.model_id), ref)
        model = self._reconciler.known(ref)
        if model is None:
            ref, model = await self._match_or_admit(ref, name, gateway)
        else:
            self._reconciler.note_used(ref)
        if self._failing is not None and (mark := self._failing.get(ref)) is not None:
            # Before any wait: the gateway's reason now, rather than a session that fails later.
            raise HttpError(mark.kind.http_status, mark.message(ref))
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

    async def _match_or_admit(self, ref: ModelRef, name: str, gateway: GatewayClient) -> tuple[ModelRef, ModelInfo]:
        """A name no gateway lists as it is: the listed model it matches, else an unlisted one
        accepted (a wildcard route covers it, or SIDECAR_UNLISTED_MODELS lets it in)."""
        # `provider/model` naming one of our gateways is matched within that gateway only.
        explicit = name == str(ref)
        wanted = ref.model_id if explicit else name

        def within(listed: Listed) -> bool:
            return not explicit or listed.gateway == ref.provider_id

        match = self._reconciler.names.match(wanted, within)
        if len(match.found) > 1:
            raise HttpError(409, _ambiguous(name, match))
        if match.unique is not None:
            found = self._reconciler.ref_of(match.unique.public_id)
            if found is not None:
                step = match.step.name.lower() if match.step is not None else None
                log.info("resolve.matched", requested=name, model=match.unique.public_id, step=step)
                model = self._reconciler.known(found)
                if model is None:
                    return found, await self._register(found)  # ours, leaving with the next write: kept
                self._reconciler.note_used(found)
                return found, model
        if ref.model_id in gateway.unkept:
            # Listed by the gateway; only SIDECAR_MAX_MODELS kept it from opencode's list.
            log.info("resolve.unlisted_accepted", gateway=ref.provider_id, model=ref.model_id, route=None, policy="listed")
            return ref, await self._register(ref)
        route = covered_by_route(ref.model_id, gateway.routes)
        policy = self._settings.unlisted_policy
        if route is None and policy == "refuse":
            # difflib over thousands of ids took up to 140 ms for a near miss (5,000 ids, measured):
            # off the event loop, which keeps serving meanwhile.
            close = await anyio.to_thread.run_sync(self._reconciler.names.closest, wanted, 3, within)
            raise HttpError(404, _not_listed(name, ref.provider_id, close))
        if route is None and policy == "probe":
            try:
                await gateway.probe(ref.model_id)
            except ModelRejected as exc:
                raise HttpError(400, str(exc)) from None
            except GatewayError as exc:
                raise HttpError(502, str(exc)) from None
        log.info("resolve.unlisted_accepted", gateway=ref.provider_id, model=ref.model_id, route=route,
                 policy=None if route else policy)
        return ref, await self._register(ref)

    async def _register(self, ref: ModelRef) -> ModelInfo:
        try:
            return await self._reconciler.register(ref)
        except RegistryFull as exc:
            raise HttpError(exc.status, exc.message) from None


def _quoted(names: list[str]) -> str:
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _ambiguous(name: str, match: Match) -> str:
    ids = [listed.public_id for listed in match.found]
    shown = ids[:10] + ([f"{len(ids) - 10} more"] if len(ids) > 10 else [])
    step = match.step.name.lower().replace("_", " ") if match.step is not None else "?"
    return f"model {name!r} matches {len(ids)} listed models ({step}): {', '.join(shown)}; name one of them"


def _not_listed(name: str, gateway_id: str, close: list[str]) -> str:
    hint = f"; did you mean {_quoted(close)}?" if close else ""
    return (
        f"model {name!r} is not listed by gateway {gateway_id!r}, and no wildcard route of it covers it{hint} "
        "(GET /v1/models lists them; SIDECAR_UNLISTED_MODELS=probe or register accepts unlisted names)"
    )
