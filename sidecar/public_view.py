"""What `/v1/models` lists: every gateway's models under one id each, and the way back from that
id to the gateway's model. Rebuilt whole by the reconciler after each write of opencode's config."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

from sidecar.catalog import Catalog, ModelInfo
from sidecar.matching import Listed, MatchIndex
from sidecar.naming import ModelRef


def public_id(ref: ModelRef, default_provider: str) -> str:
    """The id `/v1/models` lists: bare for the first gateway, `provider/model` for the others,
    so that every listed id names one model and resolves back to it."""
    return ref.model_id if ref.provider_id == default_provider else str(ref)


def provider_catalog(listed: Catalog, registered: Mapping[str, ModelInfo]) -> Catalog:
    """A gateway's models as opencode gets them: its list and the models registered for it."""
    extra = [model for model_id, model in registered.items() if model_id not in listed]
    # Nothing registered beyond the list (the usual case): the list itself, not a copy of it.
    return Catalog([*listed, *extra]) if extra else listed


class _OneGateway(Mapping[str, str]):
    """Every model id of one catalog -> its gateway, without a dict entry for each."""

    def __init__(self, catalog: Catalog, gateway_id: str) -> None:
        self._catalog, self._gateway_id = catalog, gateway_id

    def __getitem__(self, model_id: str) -> str:
        if model_id not in self._catalog:
            raise KeyError(model_id)
        return self._gateway_id

    def __iter__(self) -> Iterator[str]:
        return (model.id for model in self._catalog)

    def __len__(self) -> int:
        return len(self._catalog)


class PublicView:
    """The listed models of every gateway, given in the operator's order (the first is
    `default_provider`); a snapshot, never changed once built."""

    def __init__(self, catalogs: Mapping[str, Catalog], default_provider: str) -> None:
        self.default_provider = default_provider
        self._catalogs = catalogs
        self.catalog: Catalog
        # Bare model id -> the first gateway (in the operator's order) that has it.
        self.owners: Mapping[str, str]
        # Listed id -> its gateway's id (a string every entry shares): the ModelRef is made when
        # asked for, not held for each of 10,000 models (issue 19, RSS).
        self._gateways: dict[str, str] | None
        if len(catalogs) == 1 and default_provider in catalogs:
            # One gateway, listed under its own ids (the usual case): its catalog is the view's,
            # and the maps would say the same gateway for every id, so none is made (10,000
            # models: 1.2 MiB of dicts and the catalog's copy; issue 19, RSS).
            self.catalog = catalogs[default_provider]
            self._gateways = None
            self.owners = _OneGateway(self.catalog, default_provider)
            return
        records: dict[str, ModelInfo] = {}
        gateways: dict[str, str] = {}
        owners: dict[str, str] = {}
        # The first gateway first: a qualified id of another gateway wins a clash with it.
        for gateway_id, catalog in catalogs.items():
            for model in catalog:
                listed = public_id(ModelRef(gateway_id, model.id), default_provider)
                # A record listed under its own id is shared, not copied: 10,000 records held once.
                records[listed] = model if listed == model.id else model.model_copy(update={"id": listed})
                gateways[listed] = gateway_id
                owners.setdefault(model.id, gateway_id)
        self.catalog = Catalog(records.values())
        self._gateways = gateways
        self.owners = owners

    @functools.cached_property
    def names(self) -> MatchIndex:
        """The match index, made by the first request whose name is not a listed id exactly (most
        are): until then, no Listed is held for each of 10,000 models (issue 19, RSS)."""
        matchable: list[Listed] = []
        for gateway_id, catalog in self._catalogs.items():
            for model in catalog:
                listed = public_id(ModelRef(gateway_id, model.id), self.default_provider)
                display = model.display_name if model.display_name != model.id else None
                matchable.append(Listed(listed, model.id, gateway_id, display, model.canonical_slug))
        return MatchIndex(tuple(matchable))

    def ref_of(self, listed_id: str) -> ModelRef | None:
        """The opencode model behind an id of `/v1/models`."""
        if self._gateways is None:
            gateway_id = self.default_provider if listed_id in self.catalog else None
        else:
            gateway_id = self._gateways.get(listed_id)
        if gateway_id is None:
            return None
        if gateway_id == self.default_provider:
            return ModelRef(gateway_id, listed_id)
        return ModelRef(gateway_id, listed_id[len(gateway_id) + 1 :])  # public_id's `provider/model`

    def model(self, ref: ModelRef) -> ModelInfo | None:
        """The listed record of a gateway's model, as `/v1/models` shows it."""
        return self.catalog.get(public_id(ref, self.default_provider))
