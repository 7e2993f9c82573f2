"""A registered model the gateway says it doesn't have leaves the registry; nothing else does."""

from __future__ import annotations

import anyio
import pytest

from sidecar.naming import ModelRef
from sidecar.pruning import RegistryPruner, says_model_unknown
from sidecar.traffic import ModelTraffic


@pytest.mark.parametrize(
    ("status", "reason", "unknown"),
    [
        (400, "/chat/completions: Invalid model name passed in model=gpt-9. Call `/v1/models` to view available models", True),
        (404, "The model `gpt-9` does not exist or you do not have access to it.", True),
        (404, "model 'llama9' not found", True),
        (400, "litellm.BadRequestError: You passed in model=gpt-9. There are no healthy deployments for this model", True),
        (400, "gpt-9 is not a valid model ID", True),
        (404, "not_found_error: model: claude-9", True),
        (400, "max_tokens must be at least 1", False),
        (429, "Invalid model name (rate limited)", False),  # a refusal of another kind
        (500, "model not found", False),
        (None, "no answer", False),
    ],
)
def test_what_says_no_such_model(status: int | None, reason: str, unknown: bool) -> None:
    assert says_model_unknown(status, reason) is unknown


def test_a_refused_registered_model_is_dropped_once() -> None:
    registered = {ModelRef("litellm", "gpt-9")}
    dropped: list[ModelRef] = []

    async def unregister(ref: ModelRef) -> bool:
        if ref not in registered:
            return False
        registered.discard(ref)
        dropped.append(ref)
        return True

    pruner = RegistryPruner(lambda ref: ref in registered, unregister)
    traffic = ModelTraffic(["litellm"], lambda gateway, model: True, on_error=pruner.refused)

    def fail(model: str, status: int, error: str) -> None:
        traffic.request_done("litellm", model, status=status, first_byte=0.1, streamed_bytes=10, error=error)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(pruner.run)
            fail("gpt-9", 400, "Invalid model name passed in model=gpt-9")
            fail("gpt-9", 400, "Invalid model name passed in model=gpt-9")  # queued twice, dropped once
            fail("gpt-5.5", 400, "Invalid model name passed in model=gpt-5.5")  # listed: not ours to drop
            fail("other-registered", 429, "rate limited")
            for _ in range(10):
                await anyio.lowlevel.checkpoint()
            group.cancel_scope.cancel()

    registered.add(ModelRef("litellm", "other-registered"))
    anyio.run(main)
    assert dropped == [ModelRef("litellm", "gpt-9")]
    assert registered == {ModelRef("litellm", "other-registered")}
