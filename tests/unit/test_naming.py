import pytest

from sidecar.naming import InvalidModelName, ModelRef, normalise_model

KNOWN = {"claude-sonnet-4-5", "openai/gpt-4o-mini", "gpt-5.5"}
ALIASES = {"sonnet": "claude-sonnet-4-5", "mini": "openai/gpt-4o-mini"}


def normalise(requested: object) -> str:
    ref = normalise_model(
        requested, default_provider="litellm", managed_providers={"litellm", "team"}, owners=dict.fromkeys(KNOWN, "litellm"), aliases=ALIASES
    )
    return str(ref)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("sonnet", "litellm/claude-sonnet-4-5"),  # alias
        ("mini", "litellm/openai/gpt-4o-mini"),  # alias to an id with a slash
        ("litellm/claude-sonnet-4-5", "litellm/claude-sonnet-4-5"),  # managed provider stays
        ("litellm/not-listed", "litellm/not-listed"),
        ("team/slow", "team/slow"),  # the operator's own provider stays too
        ("claude-sonnet-4-5", "litellm/claude-sonnet-4-5"),  # bare known id
        ("openai/gpt-4o-mini", "litellm/openai/gpt-4o-mini"),  # known id containing a slash
        ("anthropic/claude-sonnet-4-5", "litellm/claude-sonnet-4-5"),  # foreign prefix dropped
        ("openai/some-new-model", "litellm/openai/some-new-model"),  # unknown: through the gateway whole
        ("anthropic/unknown", "litellm/anthropic/unknown"),
        ("brand-new", "litellm/brand-new"),
        ({"providerID": "anthropic", "modelID": "claude-sonnet-4-5"}, "litellm/claude-sonnet-4-5"),
        ({"providerID": "litellm", "modelID": "gpt-5.5"}, "litellm/gpt-5.5"),
        ({"providerID": "litellm", "id": "gpt-5.5"}, "litellm/gpt-5.5"),
        ({"providerID": "", "modelID": "gpt-5.5"}, "litellm/gpt-5.5"),
        ({"modelID": "sonnet"}, "litellm/claude-sonnet-4-5"),
        # `opencode run --model gpt-5.5` sends the bare name as the provider, and no model (issue 16).
        ({"providerID": "gpt-5.5", "modelID": ""}, "litellm/gpt-5.5"),
        ({"providerID": "sonnet", "modelID": ""}, "litellm/claude-sonnet-4-5"),
        ({"providerID": "brand-new", "modelID": ""}, "litellm/brand-new"),
        ({"providerID": "gpt-5.5", "id": ""}, "litellm/gpt-5.5"),
        ({"providerID": "gpt-5.5"}, "litellm/gpt-5.5"),
    ],
)
def test_normalisation_table(requested: object, expected: str) -> None:
    assert normalise(requested) == expected


@pytest.mark.parametrize(
    ("requested", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a" * 257, "longer than 256"),
        ("bad\x00name", "control characters"),
        ("line\nbreak", "control characters"),
        ("{env:SIDECAR_GATEWAY_API_KEY}", "substitution"),
        ("x{FILE:/etc/passwd}", "substitution"),
        (42, "string or an object"),
        (None, "string or an object"),
        ({"providerID": "litellm"}, "modelID must be a string"),
        ({"providerID": "litellm", "modelID": ""}, "modelID is empty"),  # a known provider needs its model
        ({"providerID": "{env:SIDECAR_GATEWAY_API_KEY}", "modelID": ""}, "substitution"),
        ({"providerID": "bad\nname", "modelID": ""}, "control characters"),
        ({"providerID": 3, "modelID": "x"}, "providerID must be a string"),
        ("constructor", "model is 'constructor', a JavaScript Object.prototype name"),
        ({"providerID": "litellm", "modelID": "toString"}, "modelID is 'toString'"),
        ("__proto__", "Object.prototype"),
    ],
)
def test_invalid_names(requested: object, fragment: str) -> None:
    with pytest.raises(InvalidModelName, match=fragment):
        normalise(requested)


def test_model_ref_forms() -> None:
    ref = ModelRef("litellm", "openai/gpt-4o-mini")
    assert str(ref) == "litellm/openai/gpt-4o-mini"
    assert ref.as_pair() == {"providerID": "litellm", "modelID": "openai/gpt-4o-mini"}


def test_a_listed_name_goes_to_the_gateway_that_lists_it() -> None:
    owners = {"claude-sonnet-4-5": "litellm", "mistralai/mistral-7b": "openrouter"}
    managed = {"litellm", "openrouter"}

    def resolve(requested: object) -> str:
        return str(normalise_model(requested, default_provider="litellm", managed_providers=managed, owners=owners))

    assert resolve("mistralai/mistral-7b") == "openrouter/mistralai/mistral-7b"
    assert resolve("openrouter/mistralai/mistral-7b") == "openrouter/mistralai/mistral-7b"
    assert resolve("claude-sonnet-4-5") == "litellm/claude-sonnet-4-5"
    assert resolve("openrouter/new-model") == "openrouter/new-model"
    assert resolve("unlisted") == "litellm/unlisted"  # the first gateway is the default
