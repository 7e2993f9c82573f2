"""What `/v1/models` lists: every gateway's models under one id each, and the way back from that
id to the gateway's model. Rebuilt whole by the reconciler after each write of opencode's config."""

from __future__ import annotations

from collections.abc import Mapping

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


class PublicView:
    """The listed models of every gateway, given in the operator's order (the first is
    `default_provider`); a snapshot, never changed once built."""

    def __init__(self, catalogs: Mapping[str, Catalog], default_provider: str) -> None:
        self.default_provider = default_provider
        records: dict[str, ModelInfo] = {}
        refs: dict[str, ModelRef] = {}
        owners: dict[str, str] = {}
        matchable: list[Listed] = []
        # The first gateway first: a qualified id of another gateway wins a clash with it.
        for gateway_id, catalog in catalogs.items():
            for model in catalog:
                ref = ModelRef(gateway_id, model.id)
                listed = public_id(ref, default_provider)
                # A record listed under its own id is shared, not copied: 10,000 records held once.
                records[listed] = model if listed == model.id else model.model_copy(update={"id": listed})
                refs[listed] = ref
                owners.setdefault(model.id, gateway_id)
                display = model.display_name if model.display_name != model.id else None
                matchable.append(Listed(listed, model.id, gateway_id, display, model.canonical_slug))
        self.catalog = Catalog(records.values())
        self._refs = refs
        # Bare model id -> the first gateway (in the operator's order) that has it.
        self.owners = owners
        # Indexed per matching step on first use: most requests name a listed id exactly.
        self.names = MatchIndex(tuple(matchable))

    def ref_of(self, listed_id: str) -> ModelRef | None:
        """The opencode model behind an id of `/v1/models`."""
        return self._refs.get(listed_id)

    def model(self, ref: ModelRef) -> ModelInfo | None:
        """The listed record of a gateway's model, as `/v1/models` shows it."""
        return self.catalog.get(public_id(ref, self.default_provider))
