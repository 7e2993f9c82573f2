"""The public-id view: what `/v1/models` lists for several gateways, and the way back to each model."""

from __future__ import annotations

from sidecar.catalog import Catalog, ModelInfo
from sidecar.naming import ModelRef
from sidecar.public_view import PublicView, provider_catalog, public_id


def catalog(*ids: str, registered: bool = False) -> Catalog:
    return Catalog(ModelInfo(id=i, display_name=i, registered=registered) for i in ids)


def test_the_first_gateways_ids_are_bare_the_others_qualified() -> None:
    assert public_id(ModelRef("litellm", "gpt-4o"), "litellm") == "gpt-4o"
    assert public_id(ModelRef("litellm", "openai/gpt-4o"), "litellm") == "openai/gpt-4o"
    assert public_id(ModelRef("other", "gpt-4o"), "litellm") == "other/gpt-4o"


def test_every_listed_id_resolves_back_to_its_gateways_model() -> None:
    view = PublicView({"litellm": catalog("a", "b"), "other": catalog("a", "c")}, "litellm")
    assert sorted(view.catalog.ids) == ["a", "b", "other/a", "other/c"]
    assert view.ref_of("a") == ModelRef("litellm", "a")
    assert view.ref_of("other/a") == ModelRef("other", "a")
    assert view.ref_of("c") is None and view.ref_of("litellm/a") is None
    record = view.model(ModelRef("other", "c"))
    assert record is not None and record.id == "other/c"
    assert view.model(ModelRef("other", "b")) is None


def test_a_bare_id_belongs_to_the_first_gateway_in_the_operators_order_that_has_it() -> None:
    view = PublicView({"litellm": catalog("b"), "second": catalog("a", "b"), "third": catalog("a")}, "litellm")
    assert view.owners == {"b": "litellm", "a": "second"}


def test_a_qualified_id_of_another_gateway_wins_a_clash_with_the_first_gateways_id() -> None:
    # The first gateway lists `other/x` as a bare id; the gateway `other` lists `x`.
    view = PublicView({"litellm": catalog("other/x"), "other": catalog("x")}, "litellm")
    assert view.ref_of("other/x") == ModelRef("other", "x")
    assert view.catalog.ids == ["other/x"]


def test_a_gateways_models_are_its_list_and_those_registered_for_it() -> None:
    listed = catalog("a", "b")
    registered = {m.id: m for m in catalog("b", "new", registered=True)}
    models = provider_catalog(listed, registered)
    assert sorted(models.ids) == ["a", "b", "new"]
    assert models.get("b") is listed.get("b")  # a listed model is the gateway's record, not the registered one
    assert models.get("new").registered  # type: ignore[union-attr]


def test_an_empty_view() -> None:
    view = PublicView({}, "litellm")
    assert len(view.catalog) == 0 and view.owners == {} and view.ref_of("a") is None


def test_the_match_index_is_made_by_the_first_inexact_name_only() -> None:
    # Most requests name a listed id exactly: no Listed is held per model until one does not (issue 19).
    view = PublicView({"litellm": catalog("gpt-4o", "other/x"), "other": catalog("x")}, "litellm")
    assert "names" not in vars(view)
    match = view.names.match("GPT 4o")
    assert "names" in vars(view) and view.names is view.names
    assert match.unique is not None and (match.unique.public_id, match.unique.gateway) == ("gpt-4o", "litellm")
    # Both models that clash on `other/x` are in the index, each with its own gateway, as before.
    assert sorted((listed.public_id, listed.model_id, listed.gateway) for listed in view.names.listed) == [
        ("gpt-4o", "gpt-4o", "litellm"), ("other/x", "other/x", "litellm"), ("other/x", "x", "other")
    ]


def test_one_gateway_is_listed_through_its_own_catalog_not_a_copy() -> None:
    # The usual sidecar: one gateway, its ids bare. Nothing is held per model beside its catalog (issue 19).
    listed = catalog("a", "b")
    view = PublicView({"litellm": listed}, "litellm")
    assert view.catalog is listed
    assert view.ref_of("a") == ModelRef("litellm", "a") and view.ref_of("litellm/a") is None
    assert view.ref_of("c") is None
    assert view.owners == {"a": "litellm", "b": "litellm"} and "c" not in view.owners
    assert view.owners.get("b") == "litellm" and view.owners.get("c") is None and len(view.owners) == 2
    record = view.model(ModelRef("litellm", "b"))
    assert record is not None and record.id == "b"
