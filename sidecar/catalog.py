"""The normalised model record and the catalog of them: what the API serves and opencode gets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# The Anthropic Models API says "unknown" with the epoch.
UNKNOWN_DATE = datetime(1970, 1, 1, tzinfo=timezone.utc)

MAX_MODEL_ID_LENGTH = 256

# The modalities opencode's config accepts; any other value makes it reject the whole file.
Modality = Literal["text", "audio", "image", "video", "pdf"]
MODALITIES: frozenset[str] = frozenset(Modality.__args__)  # type: ignore[attr-defined]


class ModelCost(BaseModel):
    """Price in US dollars per million tokens, as opencode's `cost` field holds it."""

    model_config = ConfigDict(frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


# The fields sets ModelInfo's records share, one per combination of names given (of its fifteen
# fields: a handful in practice).
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class ModelInfo(BaseModel):
    """One model in the Anthropic Models API shape, with the limits opencode needs."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: Literal["model"] = "model"
    display_name: str
    created_at: datetime = UNKNOWN_DATE
    max_input_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    # Required by the anthropic SDK's own ModelInfo since 2.x; gateways don't say, so "active".
    lifecycle: Literal["active", "deprecated", "retired"] = "active"
    # Not listed by the gateway: registered because an agent asked for it.
    registered: bool = False
    # What the gateway publishes beyond the Anthropic shape; None where it doesn't say.
    cost: ModelCost | None = None
    input_modalities: tuple[Modality, ...] | None = None
    output_modalities: tuple[Modality, ...] | None = None
    tool_call: bool | None = None
    reasoning: bool | None = None
    release_date: date | None = None
    # OpenRouter's stable name for the model (`anthropic/claude-4.5-sonnet-20250929`): matched
    # when a caller writes it (sidecar/matching.py).
    canonical_slug: str | None = None

    def model_post_init(self, context: Any, /) -> None:
        # Every record holds the set of the fields its gateway gave, 216 bytes each, and a gateway
        # gives the same few fields for every model: records with the same names share one set
        # (10,000 records: 2.1 MiB less; issue 19, RSS). Never changed in place: the record is
        # frozen, and model_copy copies the set before it adds to it.
        fields_set = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(fields_set), fields_set)
        if shared is not fields_set:
            object.__setattr__(self, "__pydantic_fields_set__", shared)

    def identity(self) -> str:
        """What makes two records the same model for opencode: everything but the volatile date."""
        return self.model_dump_json(exclude={"created_at"})


class ModelList(BaseModel):
    """A page of models, as Anthropic's `GET /v1/models` answers it."""

    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None


# The names opencode cannot hold as a key of its config's `models` or `provider` maps: exactly the
# own properties of JavaScript's Object.prototype, case-sensitive. Measured on opencode 1.18.33
# (Bun 1.3.14; `BUN_BE_BUN=1 opencode -e ...` lists these twelve) with one config per round and
# `POST /global/dispose` between rounds: of 323 candidate model ids (Object.prototype's,
# Function.prototype's, Array.prototype's, String.prototype's and Object's own names, the 196
# names on Bun's globalThis, `prototype`, `then`, `toJSON`, `Constructor`, `tostring`, ...),
# these 11 made `GET /config/providers` answer 500 ("undefined is not an object (evaluating
# '_?.api.id')": opencode looks each key up in a plain object of known models and finds the
# inherited function), and `__proto__` vanished (assigning it sets the prototype). Every other
# name was listed, with a 200. As a provider id, `constructor` answered 500 too (the only one of
# these names lowercase enough to be one). The list is fixed by the language, so naming one of
# these ids in a log or an error reveals nothing a caller sent beyond which of them it was.
OPENCODE_RESERVED_KEYS: frozenset[str] = frozenset(
    {
        "__proto__",
        "__defineGetter__",
        "__defineSetter__",
        "__lookupGetter__",
        "__lookupSetter__",
        "constructor",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toLocaleString",
        "toString",
        "valueOf",
    }
)


def reserved_key_reason(name: object) -> str | None:
    """Why opencode's config cannot hold `name` as a model or provider key, or None when it can."""
    if isinstance(name, str) and name in OPENCODE_RESERVED_KEYS:
        return f"is {name!r}, a JavaScript Object.prototype name that opencode's config cannot hold as a key"
    return None


def invalid_model_id_reason(model_id: object) -> str | None:
    """Why a name cannot be a model id ("is empty", ...), or None when it can."""
    if not isinstance(model_id, str):
        return "is not a string"
    if not model_id.strip():
        return "is empty"
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        return f"is longer than {MAX_MODEL_ID_LENGTH} characters"
    if not model_id.isprintable():
        return "contains control characters"
    return reserved_key_reason(model_id)


def newest_first(models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Newest first; models of one date (or of no known date) keep the order given: the gateway's."""
    return sorted(models, key=lambda model: model.created_at, reverse=True)  # stable, reversed too


class NewestModels:
    """The newest `limit` of the models a gateway lists (SIDECAR_MAX_MODELS), ties in its order,
    among those its include/exclude globs want.

    Added one at a time and trimmed whenever twice `limit` are held, so a huge list is never held
    whole as records: at 100,001 models the records alone took 76 MiB, the sidecar's limit is 256.
    """

    def __init__(self, limit: int, wants: Callable[[str], bool] = lambda model_id: True) -> None:
        self.limit = limit
        self._wants = wants
        self._models: list[ModelInfo] = []
        self.listed = 0  # models added that the globs want, kept or not
        # The ids of those trimmed away: still the gateway's, usable by name (not as records: ids only).
        self.trimmed: set[str] = set()

    def add(self, model: ModelInfo) -> None:
        if not self._wants(model.id):
            return
        self.listed += 1
        self._models.append(model)
        if len(self._models) >= 2 * self.limit:
            ordered = newest_first(self._models)
            self.trimmed.update(model.id for model in ordered[self.limit :])
            self._models = ordered[: self.limit]

    def extend(self, models: Iterable[ModelInfo]) -> None:
        for model in models:
            self.add(model)

    def candidates(self) -> list[ModelInfo]:
        """Newest first, fewer than twice `limit`: what a later step may still take some out of
        (LiteLLM's non-chat models) before `cap` cuts it to `limit`."""
        return newest_first(self._models)


# Whole lists of records written and read in one call to pydantic's core: 10,000 models saved in
# ~10 ms against ~75 ms a record at a time, read back in ~50 against ~150 (measured, issue 19).
_RECORDS: TypeAdapter[list[ModelInfo]] = TypeAdapter(list[ModelInfo])
_NOT_IDENTITY = {"__all__": {"created_at"}}  # ModelInfo.identity's exclusion, for each record


def cap(models: Iterable[ModelInfo], limit: int, *, listed: int | None = None) -> Catalog:
    """The first `limit` of `models` as a catalog that remembers how many there were."""
    models = list(models)
    return Catalog(models[:limit], listed=max(len(models), listed or 0))


class Catalog:
    """An immutable set of models, ordered newest first, then by id."""

    __slots__ = ("_models", "_by_id", "fingerprint", "listed", "_json")

    def __init__(self, models: Iterable[ModelInfo] = (), *, listed: int | None = None) -> None:
        unique = {model.id: model for model in models}
        by_id = sorted(unique.values(), key=lambda m: m.id)
        # Every record's identity, in the order of the ids (each once): the same models give the
        # same digest in any order. One call for the whole list: 10,000 models in ~5 ms, where
        # sorting each record's identity() took ~14 (measured, issue 19).
        self.fingerprint = hashlib.sha256(_RECORDS.dump_json(by_id, exclude=_NOT_IDENTITY)).hexdigest()
        ordered = sorted(by_id, key=lambda m: m.created_at, reverse=True)
        self._models: tuple[ModelInfo, ...] = tuple(ordered)
        self._by_id = {model.id: model for model in self._models}
        self._json: str | None = None
        # How many models the gateway listed: more than it holds when SIDECAR_MAX_MODELS cut the
        # list. Not in the fingerprint: opencode gets the same models either way.
        self.listed = max(listed or 0, len(self._models))

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    @property
    def capped(self) -> bool:
        """SIDECAR_MAX_MODELS left some of the gateway's models out."""
        return self.listed > len(self._models)

    def get(self, model_id: str) -> ModelInfo | None:
        return self._by_id.get(model_id)

    def index(self, model_id: str) -> int:
        return self._models.index(self._by_id[model_id])

    @property
    def ids(self) -> list[str]:
        return [model.id for model in self._models]

    def same_models(self, other: Catalog) -> bool:
        """True when opencode would need no change to go from one to the other."""
        return self.fingerprint == other.fingerprint

    def to_json(self) -> str:
        """The records as the state files hold them; made once per catalog, which never changes."""
        if self._json is None:
            # Without the fields at their defaults, which read back as them: 10,000 bare records
            # are 0.7 MB to write instead of 3.7 MB, in ~6 ms instead of ~17 (measured, issue 19).
            self._json = _RECORDS.dump_json(list(self._models), indent=1, exclude_defaults=True).decode()
        return self._json

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        return cls(_RECORDS.validate_json(text))
