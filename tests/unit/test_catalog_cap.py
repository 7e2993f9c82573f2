"""SIDECAR_MAX_MODELS at parse time: the newest N of a gateway's list, ties in the gateway's order,
among the models its include/exclude globs want, never holding the whole list as records."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from sidecar.catalog import Catalog, ModelInfo, NewestModels, cap, newest_first
from sidecar.gateway.client import GatewayClient
from sidecar.gateway.config import load_gateways_file

pytestmark = pytest.mark.anyio


def model(model_id: str, year: int | None = None) -> ModelInfo:
    created = datetime(year, 1, 1, tzinfo=timezone.utc) if year else None
    return ModelInfo(id=model_id, display_name=model_id, **({"created_at": created} if created else {}))


def test_without_dates_the_first_n_in_the_gateways_order_are_kept() -> None:
    keep = NewestModels(3)
    keep.extend(model(f"z{i:03d}") for i in range(100, 0, -1))  # listed in reverse id order
    kept = cap(keep.candidates(), 3, listed=keep.listed)
    assert {m.id for m in kept} == {"z100", "z099", "z098"}
    assert kept.listed == 100 and kept.capped and len(kept) == 3


def test_the_newest_are_kept_and_ties_keep_the_gateways_order() -> None:
    listed = [model("old-a", 2020), model("new-b", 2025), model("mid-c", 2023), model("new-a", 2025), model("mid-d", 2023)]
    keep = NewestModels(3)
    keep.extend(listed)
    assert [m.id for m in keep.candidates()][:3] == ["new-b", "new-a", "mid-c"]
    # The same answer as sorting the whole list, however often it was trimmed on the way.
    assert keep.candidates()[:3] == newest_first(listed)[:3]


def test_trimming_as_it_goes_gives_what_sorting_the_whole_list_gives() -> None:
    listed = [model(f"m{i:04d}", 2000 + (i * 7919) % 23) for i in range(1000)]
    keep = NewestModels(10)
    for item in listed:
        keep.add(item)
        assert len(keep.candidates()) < 20  # never more than twice the cap held
    assert keep.candidates()[:10] == newest_first(listed)[:10]
    assert keep.listed == 1000


def test_the_globs_choose_before_the_cap_counts() -> None:
    keep = NewestModels(2, wants=lambda model_id: model_id.startswith("keep-"))
    keep.extend(model(i) for i in ["drop-1", "keep-1", "drop-2", "keep-2", "keep-3"])
    assert [m.id for m in keep.candidates()][:2] == ["keep-1", "keep-2"] and keep.listed == 3


def test_a_list_within_the_cap_is_not_capped() -> None:
    catalog = cap([model("a"), model("b")], 2, listed=2)
    assert not catalog.capped and catalog.listed == 2
    assert not Catalog([model("a")]).capped


async def test_the_client_hands_over_the_first_n_listed_and_how_many_there_were(tmp_path: Path) -> None:
    ids = [f"model-{i:03d}" for i in range(500, 0, -1)]  # the gateway's order is not the ids' order

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})
        return httpx.Response(404)

    path = tmp_path / "sidecar.toml"
    path.write_text("[[gateways]]\nid = 'gw'\nurl = 'http://gw:4000'\nformat = 'openai'\nexclude = ['model-499']\n")
    (gateway,) = load_gateways_file(path, default_poll_interval=30, environ={})
    client = GatewayClient(gateway, timeout=10.0, retries=0, max_models=4, transport=httpx.MockTransport(handler))
    try:
        catalog = await client.fetch_catalog()
    finally:
        await client.aclose()
    assert set(catalog.ids) == {"model-500", "model-498", "model-497", "model-496"}
    assert catalog.listed == 499 and catalog.capped
