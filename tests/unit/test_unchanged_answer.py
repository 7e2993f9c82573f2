"""A poll whose gateway answers with the same bytes as the last good poll builds nothing again
(issue 19): the client gives back the same catalog object, and the shrink guard reads no ids."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo
from sidecar.gateway.client import GatewayClient, GatewayError
from sidecar.gateway.config import load_gateways_file
from sidecar.gateway_state import GatewayState

pytestmark = pytest.mark.anyio


async def no_sleep(_delay: float) -> None:
    return None


def models(*ids: str) -> dict:
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 1700000000} for i in ids]}


class Gateway:
    """A fake gateway: each path answers what `answers` holds now, and every request is counted."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        answer = self.answers.get(request.url.path, 404)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"error": "no"})
        return httpx.Response(200, content=json.dumps(answer).encode())


def client(tmp_path: Path, gateway: Gateway, fmt: str) -> GatewayClient:
    path = tmp_path / "sidecar.toml"
    path.write_text(f"[[gateways]]\nid = 'gw'\nurl = 'http://gw:4000'\nformat = '{fmt}'\n")
    (config,) = load_gateways_file(path, default_poll_interval=30, environ={})
    return GatewayClient(
        config, timeout=10.0, retries=0, max_models=5_000, transport=httpx.MockTransport(gateway), sleep=no_sleep
    )


async def test_the_same_answer_gives_the_same_catalog_without_building_it_again(tmp_path: Path) -> None:
    gateway = Gateway({"/v1/models": models("a", "b")})
    gw = client(tmp_path, gateway, "openai")
    first = await gw.fetch_catalog()
    second = await gw.fetch_catalog()
    assert second is first  # not an equal catalog built again: the very one
    assert gateway.asked == ["/v1/models", "/v1/models"]  # the gateway is still asked every poll


async def test_a_changed_answer_is_read_once_and_built_again(tmp_path: Path) -> None:
    gateway = Gateway({"/v1/models": models("a", "b")})
    gw = client(tmp_path, gateway, "openai")
    first = await gw.fetch_catalog()
    gateway.answers["/v1/models"] = models("a", "b", "c")
    second = await gw.fetch_catalog()
    assert second is not first and second.ids.count("c") == 1
    # The answer read to compare is the one parsed: not asked a second time.
    assert gateway.asked == ["/v1/models", "/v1/models"]
    gateway.answers["/v1/models"] = models("a", "b")
    third = await gw.fetch_catalog()
    assert third is not first and third.same_models(first)  # back to the first bytes: read, not remembered


async def test_every_request_of_a_poll_is_compared_litellms_model_info_too(tmp_path: Path) -> None:
    info = {"data": [{"model_name": "a", "model_info": {"mode": "chat", "max_input_tokens": 1000}}]}
    gateway = Gateway({"/v1/models": models("a"), "/model/info": info})
    gw = client(tmp_path, gateway, "litellm")
    first = await gw.fetch_catalog()
    assert (await gw.fetch_catalog()) is first
    info["data"][0]["model_info"]["max_input_tokens"] = 2000
    second = await gw.fetch_catalog()
    assert second is not first
    model = second.get("a")
    assert model is not None and model.max_input_tokens == 2000
    assert gateway.asked == ["/v1/models", "/model/info"] * 3


async def test_an_error_answered_as_before_counts_as_the_same_answer(tmp_path: Path) -> None:
    # LiteLLM's /model/info missing both times: the same outcome, the same catalog.
    gateway = Gateway({"/v1/models": models("a")})
    gw = client(tmp_path, gateway, "litellm")
    first = await gw.fetch_catalog()
    assert (await gw.fetch_catalog()) is first
    # It appears: the poll reads it and builds the catalog again.
    gateway.answers["/model/info"] = {"data": [{"model_name": "a", "model_info": {"mode": "chat", "max_tokens": 7}}]}
    second = await gw.fetch_catalog()
    assert second is not first
    assert gateway.asked == ["/v1/models", "/model/info"] * 3


async def test_a_failure_while_comparing_fails_the_poll_once_and_forgets_nothing(tmp_path: Path) -> None:
    gateway = Gateway({"/v1/models": models("a")})
    gw = client(tmp_path, gateway, "openai")
    first = await gw.fetch_catalog()
    gateway.answers["/v1/models"] = 503
    with pytest.raises(GatewayError, match="HTTP 503"):
        await gw.fetch_catalog()
    assert gateway.asked == ["/v1/models", "/v1/models"]  # the failed request is not asked twice
    gateway.answers["/v1/models"] = models("a")
    assert (await gw.fetch_catalog()) is first


class NoIds(Catalog):
    """A catalog whose ids may not be read: the shrink guard's per-model work."""

    @property
    def ids(self) -> list[str]:
        raise AssertionError("the shrink guard read the ids of a list it already holds")


def test_the_shrink_guard_passes_the_list_it_holds_without_reading_it() -> None:
    catalog = NoIds([ModelInfo(id="a", display_name="a")])
    state = GatewayState(catalog, shrink_seen=1, shrink_models=0)
    assert not state.held_by_shrink_guard("gw", catalog, threshold=0.5, confirmations=3)
    assert (state.shrink_seen, state.shrink_models) == (0, None)


async def test_a_changed_list_keeps_the_records_of_its_unchanged_entries(tmp_path: Path) -> None:
    gateway = Gateway({"/v1/models": models("a", "b")})
    gw = client(tmp_path, gateway, "openai")
    first = await gw.fetch_catalog()
    gateway.answers["/v1/models"] = models("a", "b", "c")
    second = await gw.fetch_catalog()
    assert second.get("a") is first.get("a") and second.get("b") is first.get("b")


async def test_a_list_only_json_decodes_is_read_whole_every_time(tmp_path: Path) -> None:
    # NaN is not JSON; json takes it, orjson does not, and an entry's text is orjson's: not remembered.
    body = b'{"data": [{"id": "a", "max_input_tokens": NaN}]}'
    gw = client(tmp_path, lambda request: httpx.Response(200, content=body), "openai")
    first = await gw.fetch_catalog()
    assert first.ids == ["a"] and gw._known.records == {}


class ConditionalGateway(Gateway):
    """Answers with an ETag (or a Last-Modified), and a 304 to a request that names the current one."""

    def __init__(self, answers: dict[str, object], validator: str = "etag") -> None:
        super().__init__(answers)
        self.validator = validator
        self.conditional: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        answer = self.answers.get(request.url.path, 404)
        if isinstance(answer, int):
            return httpx.Response(answer)
        body = json.dumps(answer).encode()
        tag = f'"{hash(body) & 0xFFFF:x}"' if self.validator == "etag" else f"Sun, 29 Nov 2026 10:{len(body) % 60:02d}:00 GMT"
        asked = {k: v for k, v in request.headers.items() if k in ("if-none-match", "if-modified-since")}
        self.conditional.append(asked)
        if tag in asked.values():
            return httpx.Response(304)
        return httpx.Response(200, content=body, headers={self.validator: tag})


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
async def test_a_gateway_that_says_not_modified_sends_no_list_and_the_catalog_stays(
    tmp_path: Path, validator: str
) -> None:
    gateway = ConditionalGateway({"/v1/models": models("a", "b")}, validator)
    gw = client(tmp_path, gateway, "openai")
    first = await gw.fetch_catalog()
    assert (await gw.fetch_catalog()) is first
    assert (await gw.fetch_catalog()) is first
    header = "if-none-match" if validator == "etag" else "if-modified-since"
    assert [list(asked) for asked in gateway.conditional] == [[], [header], [header]]
    gateway.answers["/v1/models"] = models("a", "b", "c")
    second = await gw.fetch_catalog()
    assert "c" in second


async def test_a_304_beside_a_changed_answer_is_asked_again_plainly(tmp_path: Path) -> None:
    info = {"data": [{"model_name": "a", "model_info": {"mode": "chat", "max_input_tokens": 1000}}]}
    gateway = ConditionalGateway({"/v1/models": models("a"), "/model/info": info})
    gw = client(tmp_path, gateway, "litellm")
    first = await gw.fetch_catalog()
    info["data"][0]["model_info"]["max_input_tokens"] = 2000
    second = await gw.fetch_catalog()
    model = second.get("a")
    assert model is not None and model.max_input_tokens == 2000
    # /v1/models answered 304, /model/info changed: the full read asked /v1/models again, plainly.
    assert gateway.asked == ["/v1/models", "/model/info", "/v1/models", "/model/info", "/v1/models"]
    assert gateway.conditional[-1] == {}
    assert (await gw.fetch_catalog()) is second
