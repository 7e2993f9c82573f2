"""The resolver's answer to names that are not listed as written: a match, an ambiguity (409), an
unlisted name refused with the closest listed ones (404), or accepted as SIDECAR_UNLISTED_MODELS
and the gateway's wildcard routes say. The real Resolver over a fake reconciler and gateway."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from sidecar.catalog import ModelInfo
from sidecar.errors import HttpError
from sidecar.gateway.client import ModelRejected
from sidecar.matching import Listed, MatchIndex
from sidecar.naming import ModelRef
from sidecar.resolve import Resolver
from sidecar.settings import Settings, SettingsError, load_settings

LISTED = ["claude-sonnet-4-5-20250929", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620", "gpt-5.5", "openai/gpt-4o"]


class Reconciler:
    base_config: dict[str, Any] = {}

    def __init__(self) -> None:
        self.models = {model_id: ModelInfo(id=model_id, display_name=model_id) for model_id in LISTED}
        self.owners = dict.fromkeys(self.models, "litellm")
        self.names = MatchIndex(tuple(Listed(model_id, model_id, "litellm") for model_id in self.models))
        self.registered: list[ModelRef] = []

    def known(self, ref: ModelRef) -> ModelInfo | None:
        return self.models.get(ref.model_id) if ref.provider_id == "litellm" else None

    def ref_of(self, listed_id: str) -> ModelRef | None:
        return ModelRef("litellm", listed_id) if listed_id in self.models else None

    def note_used(self, ref: ModelRef) -> None:
        pass

    async def register(self, ref: ModelRef) -> ModelInfo:
        self.registered.append(ref)
        return ModelInfo(id=ref.model_id, display_name=ref.model_id, registered=True)


class Gateway:
    def __init__(self, routes: tuple[str, ...] = (), accepts: bool = True, unkept: frozenset[str] = frozenset()) -> None:
        self.routes, self.accepts, self.probed, self.unkept = routes, accepts, [], unkept

    async def probe(self, model_id: str) -> None:
        self.probed.append(model_id)
        if not self.accepts:
            raise ModelRejected(f"the gateway rejected model {model_id!r}: Invalid model name")


class Applier:
    default_directory = "/work"

    async def wait_usable(self, directory: str, ref: ModelRef, timeout: float) -> bool:
        return True


def resolver(policy: str = "refuse", gateway: Gateway | None = None) -> tuple[Resolver, Reconciler]:
    settings = SimpleNamespace(gateways=[], model_aliases={}, default_provider="litellm", unlisted_policy=policy,
                               resolve_timeout=1.0)
    reconciler = Reconciler()
    gateways = {"litellm": gateway or Gateway()}
    return Resolver(settings, reconciler, Applier(), gateways), reconciler  # type: ignore[arg-type]


def resolve(resolver: Resolver, name: object) -> str:
    return str(anyio.run(resolver.resolve, name).ref)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("claude-sonnet-4.5", "litellm/claude-sonnet-4-5-20250929"),
        ("anthropic/claude-sonnet-4-5", "litellm/claude-sonnet-4-5-20250929"),
        ("Claude Sonnet 4.5", "litellm/claude-sonnet-4-5-20250929"),
        ("litellm/claude-sonnet-4.5", "litellm/claude-sonnet-4-5-20250929"),  # our provider: matched within it
        ({"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}, "litellm/claude-sonnet-4-5-20250929"),
        ("gpt-4o", "litellm/openai/gpt-4o"),
        ("GPT-5.5", "litellm/gpt-5.5"),
    ],
)
def test_names_match_listed_models_without_registering(requested: object, expected: str) -> None:
    resolving, reconciler = resolver()
    assert resolve(resolving, requested) == expected
    assert reconciler.registered == []


def test_an_ambiguous_name_is_a_409_naming_the_candidates() -> None:
    resolving, reconciler = resolver("register")
    with pytest.raises(HttpError) as caught:
        resolve(resolving, "claude-3-5-sonnet")
    assert caught.value.status == 409
    assert "claude-3-5-sonnet-20241022" in caught.value.message and "claude-3-5-sonnet-20240620" in caught.value.message
    assert reconciler.registered == []


def test_refuse_names_the_closest_listed_models_and_registers_nothing() -> None:
    gateway = Gateway()
    resolving, reconciler = resolver("refuse", gateway)
    with pytest.raises(HttpError) as caught:
        resolve(resolving, "claude-sonet-4-5")
    assert caught.value.status == 404
    assert "did you mean 'claude-sonnet-4-5-20250929'" in caught.value.message
    assert "SIDECAR_UNLISTED_MODELS" in caught.value.message
    assert reconciler.registered == [] and gateway.probed == []


def test_a_wildcard_route_admits_an_unlisted_name_whatever_the_setting() -> None:
    gateway = Gateway(routes=("openai/*",), accepts=False)
    resolving, reconciler = resolver("refuse", gateway)
    assert resolve(resolving, "openai/gpt-9") == "litellm/openai/gpt-9"
    assert reconciler.registered == [ModelRef("litellm", "openai/gpt-9")] and gateway.probed == []
    with pytest.raises(HttpError) as caught:
        resolve(resolving, "anthropic/claude-9")  # not under the route
    assert caught.value.status == 404


def test_a_model_listed_beyond_max_models_is_accepted_by_name() -> None:
    gateway = Gateway(unkept=frozenset({"old-model"}), accepts=False)
    resolving, reconciler = resolver("refuse", gateway)
    assert resolve(resolving, "old-model") == "litellm/old-model"
    assert reconciler.registered == [ModelRef("litellm", "old-model")] and gateway.probed == []


def test_probe_registers_only_what_the_gateway_accepts() -> None:
    refusing = Gateway(accepts=False)
    resolving, reconciler = resolver("probe", refusing)
    with pytest.raises(HttpError) as caught:
        resolve(resolving, "no-such-model")
    assert caught.value.status == 400 and "rejected" in caught.value.message
    assert refusing.probed == ["no-such-model"] and reconciler.registered == []
    accepting = Gateway()
    resolving, reconciler = resolver("probe", accepting)
    assert resolve(resolving, "served-unlisted") == "litellm/served-unlisted"
    assert reconciler.registered == [ModelRef("litellm", "served-unlisted")]


def test_register_registers_blind() -> None:
    gateway = Gateway()
    resolving, reconciler = resolver("register", gateway)
    assert resolve(resolving, "served-unlisted") == "litellm/served-unlisted"
    assert reconciler.registered == [ModelRef("litellm", "served-unlisted")] and gateway.probed == []


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("SIDECAR_GATEWAY_URL", "http://gw:4000")
    for name in ("UNLISTED_MODELS", "PROBE_MODELS"):
        monkeypatch.delenv(f"SIDECAR_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"SIDECAR_{name}", value)
    return load_settings()


def test_unlisted_models_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_with(monkeypatch).unlisted_policy == "refuse"
    assert settings_with(monkeypatch, UNLISTED_MODELS="register").unlisted_policy == "register"
    # The deprecated setting still means what it meant.
    assert settings_with(monkeypatch, PROBE_MODELS="true").unlisted_policy == "probe"


def test_unlisted_models_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="SIDECAR_UNLISTED_MODELS"):
        settings_with(monkeypatch, UNLISTED_MODELS="sometimes")
    with pytest.raises(SettingsError, match="SIDECAR_PROBE_MODELS"):
        settings_with(monkeypatch, PROBE_MODELS="true", UNLISTED_MODELS="register")
