"""No prompt through the sidecar is aborted by a reload (issue 16): 200 prompts started in a tight
loop across 4 directories while the gateway's list changes at every poll, so that reloads keep
coming while prompts keep starting. Each session's messages are read for MessageAbortedError."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import fake_upstream
from tests.support.fake_upstream import model_list
from tests.support.sidecar_process import SidecarProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROMPTS = 200
DIRECTORIES = 4


@pytest.fixture
def changing_gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=2, models=model_list(["m1"]))
    yield server
    server.shutdown()
    server.server_close()


def aborted(messages: list[dict]) -> list[dict]:
    return [m["info"] for m in messages if (m["info"].get("error") or {}).get("name") == "MessageAbortedError"]


def test_prompts_started_while_the_list_changes_every_poll_are_never_aborted(
    tmp_path: Path, changing_gateway: fake_upstream.FakeUpstream, make_sidecar: Callable[..., SidecarProcess]
) -> None:
    # Prompts name no model (opencode's default, m1, listed throughout): a prompt naming one would
    # wait for its directory to be current (resolve.py), and the list changes faster than that.
    sidecar = make_sidecar(
        f"http://127.0.0.1:{changing_gateway.port}", "sk-gate-key", poll_interval="0.5", default_model="m1"
    )
    directories = [tmp_path / f"project-{i}" for i in range(DIRECTORIES)]
    for directory in directories:
        directory.mkdir()
    stop = threading.Event()

    def change_the_list() -> None:
        # A different list at every poll: each poll writes a config and reloads every idle directory.
        flip = 0
        while not stop.wait(0.5):
            flip += 1
            changing_gateway.models = model_list(["m1", f"extra-{flip}"])

    changer = threading.Thread(target=change_the_list)
    sessions: list[tuple[str, str]] = []

    def prompts_in(directory: str, count: int) -> None:
        # One tight loop per directory, the four at once: a new session, a prompt, and on.
        with httpx.Client(base_url=sidecar.api_url, timeout=60) as client:
            for n in range(count):
                session = client.post("/session", params={"directory": directory}, json={})
                assert session.status_code == 200, session.text[:300]
                session_id = session.json()["id"]
                sent = client.post(
                    f"/session/{session_id}/prompt_async",
                    params={"directory": directory},
                    json={"parts": [{"type": "text", "text": f"prompt {n}"}]},
                )
                assert sent.status_code == 204, sent.text[:300]
                sessions.append((directory, session_id))

    started_at = time.monotonic()
    with httpx.Client(base_url=sidecar.api_url, timeout=60) as api:
        changer.start()
        try:
            with ThreadPoolExecutor(DIRECTORIES) as pool:
                loops = [pool.submit(prompts_in, str(d), PROMPTS // DIRECTORIES) for d in directories]
                for loop in loops:
                    loop.result()
        finally:
            stop.set()
            changer.join()
        loop_took = time.monotonic() - started_at

        def all_done() -> bool:
            return all(not api.get("/session/status", params={"directory": str(d)}).json() for d in directories)

        sidecar.wait_for(all_done, 90, "every prompt finished")
        aborts, answered = [], 0
        for directory, session_id in sessions:
            messages = api.get(f"/session/{session_id}/message", params={"directory": directory}).json()
            aborts += aborted(messages)
            answered += any(m["info"]["role"] == "assistant" and m["info"].get("time", {}).get("completed") for m in messages)
    reloads = [e for e in sidecar.events("opencode.reloaded") if e.get("directory") in {str(d) for d in directories}]
    assert aborts == [], f"{len(aborts)} prompts aborted: {aborts[:3]}"
    assert answered == PROMPTS
    assert len(reloads) >= DIRECTORIES, f"too few reloads to prove anything: {len(reloads)} in {loop_took:.1f} s"
    assert not sidecar.events("opencode.prompt_aborted_by_reload")
