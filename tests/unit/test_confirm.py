"""confirm.py: what a written config holds, compared with what opencode lists."""

from __future__ import annotations

from sidecar.opencode.confirm import Confirmation, model_differences


def test_a_written_config_is_held_as_tuples_and_compared_exactly() -> None:
    confirmation = Confirmation()
    confirmation.written({"litellm": {"a", "b"}, "other": set()})
    # A tuple per provider, not the set: 8 bytes an id held until the next config (issue 19, RSS).
    assert {type(ids) for ids in confirmation.expected.values()} == {tuple}
    assert sorted(confirmation.expected["litellm"]) == ["a", "b"]
    assert not confirmation.differs({"litellm": {"b", "a"}, "other": set()})
    assert not confirmation.differs({"litellm": {"a", "b"}})  # a provider listing nothing: not listed
    assert confirmation.differs({"litellm": {"a"}})
    assert confirmation.differs({"litellm": {"a", "b", "c"}})
    assert confirmation.differs({"litellm": {"a", "c"}})
    assert model_differences(confirmation.expected, {"litellm": {"a", "c"}}) == (["litellm/b"], ["litellm/c"])
