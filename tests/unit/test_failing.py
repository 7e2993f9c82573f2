"""Listed models the gateway refuses are marked failing, refused with its reason, retried in the
background with backoff, and cleared when the gateway answers; transient trouble marks nothing."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import anyio
import pytest
from starlette.testclient import TestClient

from sidecar.catalog import Catalog, ModelInfo
from sidecar.failing import (
    FailingModels,
    Kind,
    ListedStatuses,
    probe_served,
    classify,
    refusal_in_event,
    retry_delay,
    retry_failing,
)
from sidecar.naming import ModelRef
from sidecar.errors import HttpError
from sidecar.http.routes import create_app
from sidecar.resolve import Resolver
from sidecar.traffic import ModelTraffic
from tests.support.api_view import view_of
from tests.unit.test_resolve_names import Applier, Gateway, Reconciler

GPT = ModelRef("litellm", "gpt-5.5")


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        # Not found: LiteLLM passing on its upstream's 404, LiteLLM's own, OpenAI, Anthropic, Ollama.
        (404, "litellm.NotFoundError: OpenAIException - The model `gpt-5.5` does not exist", Kind.NOT_FOUND),
        (404, "The model `gpt-5.5` does not exist or you do not have access to it.", Kind.NOT_FOUND),
        (400, "/chat/completions: Invalid model name passed in model=gpt-5.5. Call `/v1/models` to view available models", Kind.NOT_FOUND),
        (404, "not_found_error: model: claude-9", Kind.NOT_FOUND),
        (404, "model 'llama9' not found", Kind.NOT_FOUND),
        (400, "gpt-9 is not a valid model ID", Kind.NOT_FOUND),
        # Not allowed for this key: LiteLLM's team and key access checks, OpenAI, Bedrock.
        (401, "Authentication Error, team not allowed to access model. This team can only access models=['a']. Tried to access gpt-5.5", Kind.NOT_ALLOWED),
        (401, "Authentication Error, key not allowed to access model. This key can only access models=['a']. Tried to access gpt-5.5", Kind.NOT_ALLOWED),
        (403, "key not allowed to access model gpt-5.5", Kind.NOT_ALLOWED),
        (403, "You are not allowed to sample from this model", Kind.NOT_ALLOWED),
        (403, "You don't have access to the model with the specified model ID.", Kind.NOT_ALLOWED),
        # No healthy deployment.
        (400, "litellm.BadRequestError: You passed in model=gpt-5.5. There are no healthy deployments for this model", Kind.UNAVAILABLE),
        # Transient, or about something else: never failing.
        (429, "No deployments available for selected model, Try again in 5 seconds. Passed model=gpt-5.5. cooldown_list=['x']", None),
        (429, "Rate limit reached for model gpt-5.5", None),
        (500, "The model `gpt-5.5` does not exist", None),
        (502, "Bad gateway", None),
        (503, "no healthy deployments for this model", None),  # LiteLLM's words, but a 503 passes
        (401, "Authentication Error, Invalid proxy server token passed", None),  # the key, not the model
        (400, "max_tokens must be at least 1", None),
        (400, "prompt is too long: 250000 tokens > 200000 maximum", None),
        (None, "no answer", None),
        (200, "", None),
    ],
)
def test_what_marks_a_model_failing(status: int | None, reason: str, kind: Kind | None) -> None:
    assert classify(status, reason) is kind


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def marks(listed: set[ModelRef] | None = None, **kwargs: float) -> tuple[FailingModels, Clock]:
    clock = Clock()
    listed = {GPT} if listed is None else listed
    return FailingModels(lambda ref: ref in listed, clock=clock, retry_initial=10, retry_max=60, **kwargs), clock


NOT_FOUND = "litellm.NotFoundError: OpenAIException - The model `gpt-5.5` does not exist"


def test_a_refusal_marks_a_listed_model_and_an_answer_clears_it() -> None:
    failing, clock = marks()
    traffic = ModelTraffic(["litellm"], lambda gateway, model: True, on_error=failing.refused, on_answer=failing.answered)
    traffic.request_done("litellm", "gpt-5.5", status=404, first_byte=0.1, streamed_bytes=0, error=NOT_FOUND)
    mark = failing.get(GPT)
    assert mark is not None and (mark.kind, mark.status, mark.since) == (Kind.NOT_FOUND, 404, 1000.0)
    assert mark.reason == NOT_FOUND and mark.next_try == 1010.0
    assert GPT.model_id in mark.message(GPT) and NOT_FOUND in mark.message(GPT)
    assert failing.report() == {"litellm": {"gpt-5.5": {
        "kind": "not_found", "reason": NOT_FOUND, "since": 1000.0, "status": 404, "retries": 0, "next_retry": 1010.0,
    }}}
    assert failing.failing_series() == [("litellm", "gpt-5.5", "not_found")]
    version = failing.version
    # A second refusal changes nothing (the retry keeps its pace); a 429 or a 5xx never marks.
    clock.now = 1005
    traffic.request_done("litellm", "gpt-5.5", status=404, first_byte=0.1, streamed_bytes=0, error=NOT_FOUND)
    assert failing.get(GPT) == mark and failing.version == version
    traffic.request_done("litellm", "gpt-5.5", status=200, first_byte=0.1, streamed_bytes=10, error=None)
    assert failing.get(GPT) is None and failing.version == version + 1
    traffic.request_done("litellm", "gpt-5.5", status=429, first_byte=0.1, streamed_bytes=0, error="Rate limit for model")
    traffic.request_done("litellm", "gpt-5.5", status=503, first_byte=0.1, streamed_bytes=0, error=NOT_FOUND)
    assert failing.get(GPT) is None and failing.report() == {}


def test_only_listed_models_are_marked_and_the_marks_are_bounded() -> None:
    others = {ModelRef("litellm", f"m{i}") for i in range(5)}
    failing, _ = marks({GPT, *others}, max_failing=3)
    failing.refused("litellm", "unlisted", 404, "model unlisted not found")
    assert len(failing) == 0
    for ref in sorted(others, key=str):
        failing.refused(ref.provider_id, ref.model_id, 404, f"model {ref.model_id} not found")
    assert len(failing) == 3


def test_retries_back_off_and_a_dropped_model_is_cleared() -> None:
    listed = {GPT}
    failing, clock = marks(listed)
    failing.refused("litellm", "gpt-5.5", 404, NOT_FOUND)
    assert failing.due(4) == []
    clock.now = 1010
    assert failing.due(4) == [GPT]
    failing.retry_failed(GPT, 429, "cooling down")  # transient: the reason stays, the wait doubles
    mark = failing.get(GPT)
    assert mark is not None and mark.reason == NOT_FOUND and (mark.attempts, mark.next_try) == (1, 1030)
    clock.now = 1030
    version = failing.version
    failing.retry_failed(GPT, 401, "team not allowed to access model gpt-5.5")  # another kind: shown
    mark = failing.get(GPT)
    assert mark is not None and mark.kind is Kind.NOT_ALLOWED and mark.next_try == 1030 + 40
    assert failing.version == version + 1
    assert [retry_delay(n, 10, 60) for n in range(5)] == [10, 20, 40, 60, 60]
    listed.clear()  # the gateway's list dropped it
    assert failing.due(4) == [] and failing.get(GPT) is None


def test_the_retry_loop_probes_at_most_a_few_at_once_and_clears_what_answers() -> None:
    refs = [ModelRef("litellm", f"m{i}") for i in range(6)]
    failing, clock = marks(set(refs))
    for ref in refs:
        failing.refused(ref.provider_id, ref.model_id, 404, f"model {ref.model_id} not found")
    accepting = {"m0", "m3"}
    in_flight, most, probed = 0, 0, []

    async def probe(ref: ModelRef) -> tuple[int | None, str] | None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        probed.append(ref.model_id)
        await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return None if ref.model_id in accepting else (None, "timed out")

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds
        if clock.now > 1100:
            raise anyio.get_cancelled_exc_class()
        await anyio.lowlevel.checkpoint()

    async def main() -> None:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await retry_failing(failing, probe, concurrency=2, tick=5, clock=clock, sleep=sleep)

    anyio.run(main)
    assert most == 2
    assert failing.get(ModelRef("litellm", "m0")) is None and failing.get(ModelRef("litellm", "m3")) is None
    assert len(failing) == 4
    # Nothing is probed before its time: first at 1010, then 20 s later, then 40 s later (by 1100).
    assert probed.count("m1") == 3 and probed.count("m0") == 1
    assert all(0 <= seconds <= 5 for seconds in slept)


def test_the_retry_loop_sleeps_out_the_first_retry_while_nothing_is_marked_and_is_on_time_for_a_new_mark() -> None:
    failing, clock = marks({GPT})
    probed: list[float] = []
    slept: list[float] = []

    async def probe(ref: ModelRef) -> tuple[int | None, str] | None:
        probed.append(clock.now)
        return None

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # a refusal while the idle loop sleeps
            clock.now += 3
            failing.refused("litellm", "gpt-5.5", 404, NOT_FOUND)
            clock.now += seconds - 3
        else:
            clock.now += seconds
        if len(slept) == 5:
            raise anyio.get_cancelled_exc_class()
        await anyio.lowlevel.checkpoint()

    async def main() -> None:
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await retry_failing(failing, probe, tick=1, clock=clock, sleep=sleep)

    anyio.run(main)
    # Idle, one sleep of the first retry's delay (not a wake-up a second); the mark made 3 s into it
    # is probed when due, 3 s after that sleep, and nothing is left to probe.
    assert slept[0] == failing.first_retry == 10
    assert probed == [1000 + 3 + 10] and failing.get(GPT) is None
    assert slept[1:] == [1, 1, 1, 10]


def test_the_models_page_shows_the_mark_at_once_despite_its_cache() -> None:
    failing, _ = marks()
    catalog = Catalog([ModelInfo(id="gpt-5.5", display_name="GPT"), ModelInfo(id="other", display_name="Other")])
    refs = {"gpt-5.5": GPT, "other": ModelRef("litellm", "other")}
    view = replace(view_of(lambda: catalog), statuses=ListedStatuses(failing, refs.get))
    with TestClient(create_app(view)) as client:
        before = client.get("/v1/models").json()["data"]
        assert before and all("status" not in entry for entry in before)  # an ok model keeps its shape
        failing.refused("litellm", "gpt-5.5", 404, NOT_FOUND)
        entries = {e["id"]: e for e in client.get("/v1/models").json()["data"]}
        assert entries["gpt-5.5"]["status"] == "failing" and entries["gpt-5.5"]["failing"]["reason"] == NOT_FOUND
        assert "status" not in entries["other"]
        assert client.get("/v1/models/gpt-5.5").json()["failing"]["kind"] == "not_found"
        failing.answered("litellm", "gpt-5.5")
        assert client.get("/v1/models").json()["data"] == before


def test_listed_statuses_look_nothing_up_while_nothing_fails() -> None:
    failing, _ = marks()
    asked: list[str] = []

    def ref_of(listed_id: str) -> ModelRef | None:
        asked.append(listed_id)
        return GPT if listed_id == "gpt-5.5" else None

    statuses = ListedStatuses(failing, ref_of)
    assert statuses.of("gpt-5.5") is None and asked == []
    failing.refused("litellm", "gpt-5.5", 404, NOT_FOUND)
    assert statuses.of("gpt-5.5") == failing.get(GPT).report()  # type: ignore[union-attr]
    assert statuses.of("other") is None and statuses.version == failing.version


def assistant_update(error: object, provider: object = "litellm", model: object = "gpt-5.5") -> dict[str, object]:
    """A `/global/event` event as opencode 1.18 sends it when a prompt's model request failed."""
    info = {"role": "assistant", "providerID": provider, "modelID": model, "sessionID": "ses_1", "error": error}
    return {"directory": "/work", "payload": {"type": "message.updated", "properties": {"sessionID": "ses_1", "info": info}}}


def api_error(status: object, message: object = NOT_FOUND) -> dict[str, object]:
    return {"name": "APIError", "data": {"message": message, "statusCode": status, "isRetryable": False}}


@pytest.mark.parametrize(
    ("event", "refusal"),
    [
        (assistant_update(api_error(404)), ("litellm", "gpt-5.5", 404, NOT_FOUND)),
        (assistant_update(api_error(429, "rate limited")), ("litellm", "gpt-5.5", 429, "rate limited")),
        (assistant_update(None), None),  # answered
        (assistant_update({"name": "MessageAbortedError", "data": {"message": "aborted"}}), None),
        (assistant_update(api_error(None)), None),  # no status: nothing to tell it by
        (assistant_update(api_error(True)), None),
        (assistant_update(api_error(404, ["not", "text"])), None),
        (assistant_update(api_error(404), provider=None), None),
        # session.error carries the same error but no model.
        ({"payload": {"type": "session.error", "properties": {"sessionID": "ses_1", "error": api_error(404)}}}, None),
        ({"payload": "not an object"}, None),
        ({}, None),
    ],
)
def test_a_refusal_read_from_opencodes_events(event: dict[str, object], refusal: object) -> None:
    assert refusal_in_event(event) == refusal


def test_an_event_marks_like_the_gateway_route() -> None:
    failing, _ = marks()
    failing.note_event(assistant_update(api_error(429, "rate limited")))
    assert failing.get(GPT) is None
    failing.note_event(assistant_update(api_error(404)))
    mark = failing.get(GPT)
    assert mark is not None and mark.kind is Kind.NOT_FOUND


@pytest.mark.parametrize(
    ("status", "reason", "answer"),
    [
        (404, NOT_FOUND, 404),
        (401, "team not allowed to access model. Tried to access gpt-5.5", 403),
        (400, "You passed in model=gpt-5.5. There are no healthy deployments for this model", 503),
    ],
)
def test_the_resolver_refuses_a_failing_model_with_the_gateways_reason(status: int, reason: str, answer: int) -> None:
    failing, _ = marks()
    settings = SimpleNamespace(gateways=[], model_aliases={}, default_provider="litellm", unlisted_policy="refuse",
                               resolve_timeout=1.0)
    resolving = Resolver(settings, Reconciler(), Applier(), {"litellm": Gateway()}, failing=failing)  # type: ignore[arg-type]
    assert anyio.run(resolving.resolve, "GPT-5.5").ref == GPT
    failing.refused("litellm", "gpt-5.5", status, reason)
    for name in ("gpt-5.5", "GPT-5.5", "litellm/gpt-5.5"):  # by any name that means it
        with pytest.raises(HttpError) as caught:
            anyio.run(resolving.resolve, name)
        assert caught.value.status == answer and reason in caught.value.message and "'litellm/gpt-5.5'" in caught.value.message
    failing.answered("litellm", "gpt-5.5")
    assert anyio.run(resolving.resolve, "gpt-5.5").ref == GPT


@pytest.mark.parametrize(
    ("outcome", "served"),
    [
        (None, True),
        ((400, "max_tokens: must be at least 16"), True),  # the model is there: the request was refused
        ((404, NOT_FOUND), False),
        ((400, "There are no healthy deployments for this model"), False),
        ((429, "No deployments available for selected model, cooldown"), False),
        ((401, "Authentication Error, Invalid proxy server token passed"), False),
        ((403, "Forbidden"), False),
        ((None, "the gateway could not be asked: timed out after 10s"), False),
        ((502, "the gateway answered HTTP 502"), False),
    ],
)
def test_what_a_retry_takes_for_served(outcome: tuple[int | None, str] | None, served: bool) -> None:
    assert probe_served(outcome) is served
