from datetime import datetime, timezone

import httpx
import pytest

from sidecar.api import HealthView, create_app
from sidecar.catalog import Catalog, ModelInfo

MODELS = [ModelInfo(id=f"model-{i:02d}", display_name=f"Model {i}") for i in range(25)]
MODELS.append(ModelInfo(id="vendor/newest", display_name="Newest", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
CATALOG = Catalog(MODELS)


@pytest.fixture
def client():
    view = HealthView(lambda: CATALOG, lambda: {"ready": False, "opencode_healthy": False})
    transport = httpx.ASGITransport(app=create_app(view))
    return httpx.AsyncClient(transport=transport, base_url="http://sidecar")


pytestmark = pytest.mark.anyio


async def test_first_page_is_newest_first_with_default_limit(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/models")).json()
    assert len(page["data"]) == 20
    assert page["data"][0]["id"] == "vendor/newest"
    assert page["data"][0]["created_at"] == "2026-01-01T00:00:00Z"
    assert page["data"][1]["created_at"] == "1970-01-01T00:00:00Z"
    assert page["data"][1]["type"] == "model"
    assert page["has_more"] is True
    assert page["first_id"] == "vendor/newest" and page["last_id"] == page["data"][-1]["id"]


async def test_after_id_and_before_id_walk_the_whole_list(client: httpx.AsyncClient) -> None:
    seen, after = [], None
    while True:
        params = {"limit": 7} | ({"after_id": after} if after else {})
        page = (await client.get("/v1/models", params=params)).json()
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == CATALOG.ids
    back = (await client.get("/v1/models", params={"before_id": "model-10", "limit": 3})).json()
    assert [m["id"] for m in back["data"]] == CATALOG.ids[CATALOG.index("model-10") - 3 : CATALOG.index("model-10")]
    assert back["has_more"] is True


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"after_id": "nope"}, {"after_id": "model-01", "before_id": "model-02"}],
)
async def test_bad_parameters_are_anthropic_errors(client: httpx.AsyncClient, params: dict) -> None:
    response = await client.get("/v1/models", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]


async def test_retrieve_by_id_with_slash_and_unknown(client: httpx.AsyncClient) -> None:
    found = await client.get("/v1/models/vendor/newest")
    assert found.status_code == 200 and found.json()["display_name"] == "Newest"
    missing = await client.get("/v1/models/vendor/unknown")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


async def test_health_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nope")).json()["error"]["type"] == "not_found_error"
    response = await client.post("/v1/models")
    assert response.status_code == 404 and response.json()["type"] == "error"
