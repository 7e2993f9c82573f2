"""A hub sidecar's answer to `GET /v1/catalogs/{gateway}` read into a catalog (pure).

The hub is another sidecar, but its answer is checked as a gateway's would be: a broken or hostile
hub's body is bounded, its shape checked, its model ids held to the rules of any listed id, and the
whole answer refused at the first fault, so that the last good list stays. No message repeats what
the hub sent beyond a field's name and a model's position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sidecar.catalog import Catalog, ModelInfo, NewestModels, cap, invalid_model_id_reason
from sidecar.lists.litellm import MAX_ROUTES

# A version is a content hash (the hub's ETag): short and printable, or no version at all.
MAX_VERSION_LENGTH = 128


class MalformedHubAnswer(ValueError):
    """The hub's answer is not a catalog; the message names what is wrong, never the hub's text."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gateway: str
    version: str = Field(min_length=1, max_length=MAX_VERSION_LENGTH)
    listed: int | None = Field(default=None, ge=0)
    models: list[ModelInfo]
    wildcards: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class HubCatalog:
    """What a hub's answer gives: the catalog opencode gets, the hub's version of it, the gateway's
    wildcard routes, and the ids SIDECAR_MAX_MODELS left out (still usable by name)."""

    version: str
    catalog: Catalog
    routes: tuple[str, ...]
    unkept: frozenset[str]


def etag_of(version: str) -> str:
    return f'"{version}"'


def parse_hub_answer(
    body: bytes | bytearray, gateway_id: str, *, max_models: int, wants: Callable[[str], bool]
) -> HubCatalog:
    """The catalog in a hub's 200, with this sidecar's include/exclude and SIDECAR_MAX_MODELS
    applied as they are to a gateway's list; MalformedHubAnswer when it is not one."""
    try:
        # One pass in pydantic's core from bytes to records: 10,000 models without a dict of each first.
        answer = _Answer.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedHubAnswer(_first_problem(exc)) from None
    if answer.gateway != gateway_id:
        raise MalformedHubAnswer(f"the answer is another gateway's catalog, not {gateway_id!r}'s")
    if not answer.version.isprintable() or '"' in answer.version:
        raise MalformedHubAnswer("version: must be printable, without quotes")
    keep = NewestModels(max_models, wants)
    for index, model in enumerate(answer.models):
        reason = invalid_model_id_reason(model.id)
        if reason is not None:
            raise MalformedHubAnswer(f"models[{index}].id {reason}")
        if model.registered:
            # The hub serves its gateway's list, never the models registered on its own requests.
            raise MalformedHubAnswer(f"models[{index}] is marked registered, which no listed model is")
        keep.add(model)
    candidates = keep.candidates()
    # The hub's own cap may have left models out already: they still count as listed.
    beyond_hub = max(0, (answer.listed or 0) - len(answer.models))
    catalog = cap(candidates, max_models, listed=keep.listed + beyond_hub)
    unkept = frozenset(keep.trimmed | {model.id for model in candidates[len(catalog) :]})
    return HubCatalog(answer.version, catalog, _routes(answer.wildcards), unkept)


def _routes(patterns: list[str]) -> tuple[str, ...]:
    """The gateway's wildcard routes as the hub relays them, held to what `wildcard_routes` keeps
    of a LiteLLM list: a `*`, an id otherwise usable, at most MAX_ROUTES."""
    routes: dict[str, None] = {}
    for pattern in patterns:
        if "*" in pattern and invalid_model_id_reason(pattern) is None:
            routes[pattern] = None
            if len(routes) >= MAX_ROUTES:
                break
    return tuple(routes)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    if error["type"] == "json_invalid":
        return "the body is not JSON"
    if error["type"] == "model_type" and not where:
        return "the body is not a JSON object"
    message = "is required" if error["type"] == "missing" else error["msg"]
    return f"{where}: {message}" if where else message
