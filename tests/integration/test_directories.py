"""A directory opencode loaded through reads only (no session, so no event) still gets the new list."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import model_list
from tests.support.opencode_api import provider_models
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]



@pytest.fixture
def fake_gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=model_list(["m1"]))
    yield server
    server.shutdown()
    server.server_close()


def test_a_directory_only_read_through_the_pass_through_is_reloaded_on_a_change(
    tmp_path, fake_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    sidecar = make_sidecar(f"http://127.0.0.1:{fake_gateway.port}", "sk-directories-key")
    reader = tmp_path / "read-only-client"
    reader.mkdir()
    # A client (a TUI, a dashboard) that only reads in its directory: opencode loads an instance
    # for it and announces nothing.
    through = httpx.get(f"{sidecar.api_url}/config/providers", params={"directory": str(reader)}, timeout=30)
    assert through.status_code == 200
    fake_gateway.models = model_list(["m1", "m2"])
    with sidecar.opencode() as opencode:
        sidecar.wait_for(lambda: "m2" in provider_models(opencode, str(reader)), 30, "m2 in the read-only directory")
    assert any(e.get("directory") == str(reader) for e in sidecar.events("opencode.reloaded"))
