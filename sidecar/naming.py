"""Turn whatever model name an agent sends into opencode's `provider/model`: a pure function."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.catalog import invalid_model_id_reason

# opencode expands these anywhere in its config text; a model name must never carry one in.
SUBSTITUTION = re.compile(r"\{(env|file):", re.IGNORECASE)


class InvalidModelName(ValueError):
    """The name can't be a model; the message says why and is safe to show the caller."""


# Slotted: one is held per listed model (10,000 of them in PublicView), each 48 bytes without a
# __dict__, one allocation instead of two (issue 19, RSS).
@dataclass(frozen=True, slots=True)
class ModelRef:
    provider_id: str
    model_id: str

    def __str__(self) -> str:
        return f"{self.provider_id}/{self.model_id}"

    def as_pair(self) -> dict[str, str]:
        return {"providerID": self.provider_id, "modelID": self.model_id}


def check_model_name(name: object, what: str = "model") -> str:
    if not isinstance(name, str):
        raise InvalidModelName(f"{what} must be a string")
    reason = invalid_model_id_reason(name)
    if reason is not None:
        raise InvalidModelName(f"{what} {reason}")
    if SUBSTITUTION.search(name):
        raise InvalidModelName(f"{what} contains an opencode substitution pattern ({{env:...}} or {{file:...}})")
    if "*" in name:
        # `openai/*` would pass as covered by the gateway's own wildcard route and be registered.
        raise InvalidModelName(f"{what} contains '*': that names a gateway's wildcard route, not a model")
    return name


def check_aliases(aliases: Mapping[str, str]) -> Mapping[str, str]:
    """Aliases and their targets must be usable model names; ValueError says which is not."""
    for alias, target in aliases.items():
        try:
            check_model_name(alias, "an alias")
            check_model_name(target, f"the target of {alias!r}")
        except InvalidModelName as exc:
            raise ValueError(str(exc)) from None
    return aliases


def requested_name(requested: Any) -> str:
    """The model as one string, from `"name"`, `{"providerID", "modelID"}` or `{"providerID", "id"}`."""
    if isinstance(requested, str):
        return check_model_name(requested)
    if isinstance(requested, Mapping):
        model_id = requested.get("modelID", requested.get("id"))
        check_model_name(model_id, "modelID")
        provider_id = requested.get("providerID")
        if provider_id in (None, ""):
            return model_id
        check_model_name(provider_id, "providerID")
        return check_model_name(f"{provider_id}/{model_id}")
    raise InvalidModelName('model must be a string or an object with "providerID" and "modelID"')


def bare_name_as_provider(requested: Any, managed_providers: Collection[str]) -> Any:
    """opencode's CLI splits `--model gpt-5.5` at its first `/` and sends providerID `gpt-5.5` with
    an empty modelID (`opencode run --attach`, measured with 1.18.33): a reference whose provider is
    none the sidecar knows and whose model is empty is that bare name."""
    if not isinstance(requested, Mapping):
        return requested
    model_id = requested.get("modelID", requested.get("id"))
    provider_id = requested.get("providerID")
    if model_id in (None, "") and isinstance(provider_id, str) and provider_id and provider_id not in managed_providers:
        return provider_id
    return requested


def expanded_name(requested: Any, managed_providers: Collection[str], aliases: Mapping[str, str] | None = None) -> str:
    """The requested model as one checked string, its alias expanded."""
    name = requested_name(bare_name_as_provider(requested, managed_providers))
    if aliases and name in aliases:
        name = check_model_name(aliases[name], f"alias {name!r}")
    return name


def normalise_model(
    requested: Any,
    *,
    default_provider: str,
    managed_providers: Collection[str],
    owners: Mapping[str, str],
    aliases: Mapping[str, str] | None = None,
) -> ModelRef:
    """Resolve a requested model, in this order:

    1. an alias is expanded;
    2. `provider/model` whose provider the sidecar manages stays as it is;
    3. a whole string that a gateway lists (ids may contain `/`) joins that gateway, the first
       in `owners` (model id -> provider) when several list it;
    4. a prefix naming another provider is dropped when the rest is a listed id;
    5. anything else goes through the default gateway as `<default provider>/<whole string>`,
       for the resolver to match the way people write names (sidecar/matching.py) or to treat
       as unlisted.

    A reference with an empty model and a provider the sidecar does not know is read as the bare
    name it was (bare_name_as_provider) first.
    """
    name = expanded_name(requested, managed_providers, aliases)
    provider, slash, rest = name.partition("/")
    if slash and rest and provider in managed_providers:
        return ModelRef(provider, rest)
    if name in owners:
        return ModelRef(owners[name], name)
    if slash and rest in owners:
        return ModelRef(owners[rest], rest)
    return ModelRef(default_provider, name)
