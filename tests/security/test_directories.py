"""Issue 12, item 5: a directory is checked where it enters, one opencode can't load is dropped
after a bounded number of tries, and the set of directories kept in step is bounded.

The attacks go to the real sidecar in front of the real `opencode serve`. "opencode never saw
it" is read in opencode's own log, which names every directory it builds an instance for and
every request it fails; a later, harmless request is the barrier that proves the order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.directories import InvalidDirectory, check_directory
from sidecar.opencode.tracked import RELOAD_ATTEMPTS, reload_retry_delay
from tests.support import fake_upstream
from tests.support.fake_upstream import model_list
from tests.support.sidecar_process import SidecarProcess, start_sidecar

LONG_NAME = "n" * 256


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("/", "/"),
        ("/work/project", "/work/project"),
        ("/work/project/", "/work/project"),
        ("//work//project/./", "/work/project"),
        ("/work/./project/.", "/work/project"),
        ("/work/pro ject/é", "/work/pro ject/é"),
        ("/" + "n" * 255, "/" + "n" * 255),
    ],
)
def test_a_good_directory_comes_out_in_its_one_spelling(given: str, normal: str) -> None:
    assert check_directory(given) == normal


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("/x\x00y", "control"),
        ("/x\ny", "control"),
        ("/x\ty", "control"),
        ("/x\x1b[31my", "control"),
        ("/x\x7fy", "control"),
        ("/x\x85y", "control"),  # C1 next line
        ("/x\u202ey", "control"),  # right-to-left override: a log would show another path
        ("/x\u200by", "control"),  # zero-width space
        ("/x\u2028y", "control"),  # line separator
        ("/x\ud800y", "control"),  # a lone surrogate has no UTF-8 form
        ("", "absolute"),
        ("relative/path", "absolute"),
        ("./project", "absolute"),
        ("~/project", "absolute"),
        ("C:\\work", "absolute"),
        ("/work/../etc", "'..'"),
        ("/..", "'..'"),
        ("/work/project/..", "'..'"),
        ("/" + LONG_NAME, "255 bytes"),
        ("/" + "é" * 128, "255 bytes"),  # 256 bytes in UTF-8
        ("/" + "a/" * 2048, "4096 bytes"),
        (None, "string"),
        (["/work"], "string"),
        (b"/work", "string"),
    ],
)
def test_a_bad_directory_is_refused_saying_why_without_repeating_it(given: Any, reason: str) -> None:
    with pytest.raises(InvalidDirectory) as refused:
        check_directory(given)
    message = str(refused.value)
    assert reason in message
    assert message.isprintable() and len(message) < 100


# --- against the real sidecar and the real opencode -------------------------------------------

@pytest.fixture(scope="module")
def gateway() -> Iterator[fake_upstream.FakeUpstream]:
    server = fake_upstream.start_in_thread(delay=0.0, chunks=1, models=model_list(["m1"]))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, gateway: fake_upstream.FakeUpstream) -> Iterator[SidecarProcess]:
    process = start_sidecar(tmp_path_factory.mktemp("directories"), f"http://127.0.0.1:{gateway.port}", "sk-dirs-key")
    yield process
    process.stop()


def reloads(sidecar: SidecarProcess) -> dict[str, Any]:
    return httpx.get(f"{sidecar.api_url}/v1/status", timeout=10).json()["reloads"]


def assert_refused(answer: httpx.Response, reason: str) -> None:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert reason in body["error"]["message"]


NUL = "/x\x00y"


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("entry", "send"),
    [
        ("query", lambda api: httpx.get(f"{api}/session?directory=/x%00y", timeout=30)),
        ("header", lambda api: httpx.get(f"{api}/session", headers={"x-opencode-directory": "/x%00y"}, timeout=30)),
        ("query of a new session", lambda api: httpx.post(f"{api}/session?directory=/x%00y", json={}, timeout=30)),
        ("resolve", lambda api: httpx.post(
            f"{api}/v1/models/resolve", json={"model": "litellm/m1", "directory": NUL}, timeout=30)),
    ],
)
def test_a_directory_with_a_nul_is_400_and_never_reaches_opencode(
    sidecar: SidecarProcess, tmp_path: Path, entry: str, send: Any
) -> None:
    before = reloads(sidecar)
    sessions = httpx.get(f"{sidecar.opencode_url}/session", auth=("opencode", sidecar.password), timeout=30).json()
    assert_refused(send(sidecar.api_url), "control")
    sidecar.opencode_barrier(tmp_path)
    # Forwarded, opencode fails in realpath and logs the path: "... without null bytes. Received "/x\u0000y"".
    assert "u0000y" not in sidecar.opencode_log() and "null bytes" not in sidecar.opencode_log()
    after = reloads(sidecar)
    assert after["directories"] == before["directories"] + 1, "only the barrier's directory joined"
    assert not any("\x00" in d for d in after["pending_reloads"] + after["waiting_for_idle"])
    listed = httpx.get(f"{sidecar.opencode_url}/session", auth=("opencode", sidecar.password), timeout=30).json()
    assert listed == sessions, "no session was created"


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (lambda api, d: httpx.get(f"{api}/session", params={"directory": f"{d}/../etc"}, timeout=30), "'..'"),
        (lambda api, d: httpx.get(f"{api}/session", params={"directory": "etc"}, timeout=30), "absolute"),
        (lambda api, d: httpx.get(f"{api}/session", params=[("directory", str(d)), ("directory", "/etc")],
                                  timeout=30), "once"),
        (lambda api, d: httpx.get(f"{api}/session", headers={"x-opencode-directory": f"/{LONG_NAME}"},
                                  timeout=30), "255 bytes"),
        (lambda api, d: httpx.post(f"{api}/v1/models/resolve", json={"model": "litellm/m1",
                                   "directory": f"{d}/../etc"}, timeout=30), "'..'"),
    ],
    ids=["dot-dot", "relative", "twice", "long-name", "resolve-dot-dot"],
)
def test_other_bad_directories_are_400_and_never_reach_opencode(
    sidecar: SidecarProcess, tmp_path: Path, send: Any, reason: str
) -> None:
    before = reloads(sidecar)
    assert_refused(send(sidecar.api_url, tmp_path), reason)
    sidecar.opencode_barrier(tmp_path)
    log = sidecar.opencode_log()
    # Where opencode would have built an instance (it resolves a path against its own directory).
    for place in (os.path.normpath(f"{tmp_path}/../etc"), f"{sidecar.directory}/etc", "/etc"):
        assert f"directory={place}\n" not in log
    assert LONG_NAME not in log
    assert reloads(sidecar)["directories"] == before["directories"] + 1, "only the barrier's directory joined"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_spellings_of_one_directory_are_forwarded_and_kept_as_one(sidecar: SidecarProcess, tmp_path: Path) -> None:
    project = tmp_path / "spelled"
    project.mkdir()
    before = reloads(sidecar)["directories"]
    for spelling in (f"{project}/", f"/{project}//./", str(project)):
        answer = httpx.get(f"{sidecar.api_url}/session", params={"directory": spelling}, timeout=30)
        assert answer.status_code == 200, answer.text
    encoded = str(project).replace("/", "%2F") + "%2F"
    answer = httpx.get(f"{sidecar.api_url}/path", headers={"x-opencode-directory": encoded}, timeout=30)
    assert answer.status_code == 200 and answer.json()["directory"] == str(project)
    assert reloads(sidecar)["directories"] == before + 1


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_directory_opencode_answers_500_for_is_dropped_after_the_bound(
    sidecar: SidecarProcess, gateway: fake_upstream.FakeUpstream, tmp_path: Path
) -> None:
    # A file: a well-formed absolute path that opencode 1.18.33 answers HTTP 500 for on every
    # route (ENOTDIR reading its opencode.jsonc). Only opencode can tell: it may be on another
    # filesystem (attach mode), so the sidecar accepts it.
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    bad = str(not_a_directory)
    answer = httpx.get(f"{sidecar.api_url}/session", params={"directory": bad}, timeout=30)
    assert answer.status_code == 500, "opencode's own answer, passed through"

    def events(name: str) -> list[dict[str, Any]]:
        return [e for e in sidecar.events(name) if e.get("directory") == bad]

    dropped = sidecar.wait_for(lambda: events("opencode.directory_dropped"), 90, "the directory to be dropped")
    assert [(e["reason"], e["attempts"]) for e in dropped] == [("reload_failed", RELOAD_ATTEMPTS)]
    failed = events("opencode.reload_failed")
    assert [e["attempt"] for e in failed] == list(range(1, RELOAD_ATTEMPTS))
    assert [e["retry_in"] for e in failed] == [reload_retry_delay(n) for n in range(1, RELOAD_ATTEMPTS)]
    report = reloads(sidecar)
    assert bad not in report["pending_reloads"]

    # A config change reloads every directory the sidecar keeps: once it is applied, the dropped
    # one was not among them, and no further failure was logged for it.
    version = report["config_version"]
    gateway.models = model_list(["m1", f"m-{uuid.uuid4().hex[:8]}"])
    sidecar.wait_for(lambda: (r := reloads(sidecar))["applied"] and r["config_version"] > version, 60, "a new config")
    assert not any(e.get("directory") == bad for e in sidecar.events("opencode.reloaded"))
    assert len(events("opencode.reload_failed")) == RELOAD_ATTEMPTS - 1
    assert len(events("opencode.directory_dropped")) == 1


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_max_directories_keeps_the_most_recently_used_and_the_default(
    tmp_path: Path, gateway: fake_upstream.FakeUpstream
) -> None:
    sidecar = start_sidecar(
        tmp_path / "bounded", f"http://127.0.0.1:{gateway.port}", "sk-dirs-key", max_directories="3"
    )
    try:
        d1, d2, d3, d4, d5 = (tmp_path / f"d{i}" for i in range(1, 6))
        # d1 is used again before d3 arrives: the least recently used then is d2, not d1.
        for directory in (d1, d2, d1, d3, d4, d5):
            directory.mkdir(exist_ok=True)
            answer = httpx.get(f"{sidecar.api_url}/session", params={"directory": str(directory)}, timeout=30)
            assert answer.status_code == 200, answer.text
        assert reloads(sidecar)["directories"] == 3
        dropped = [(e["directory"], e["reason"]) for e in sidecar.events("opencode.directory_dropped")]
        assert dropped == [(str(d2), "limit"), (str(d1), "limit"), (str(d3), "limit")]
        # What is kept is what a config change reloads: the default directory, d4 and d5.
        version = reloads(sidecar)["config_version"]
        gateway.models = model_list(["m1", f"m-{uuid.uuid4().hex[:8]}"])
        sidecar.wait_for(lambda: reloads(sidecar)["config_version"] > version, 60, "a new config")
        sidecar.wait_for(lambda: not reloads(sidecar)["pending_reloads"] and reloads(sidecar)["applied"], 60, "applied")
        reloaded = {e["directory"] for e in sidecar.events("opencode.reloaded") if e["version"] > version}
        assert reloaded == {str(sidecar.directory), str(d4), str(d5)}
    finally:
        sidecar.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_resolve_in_a_directory_opencode_answers_500_for_is_a_400_after_the_bound(
    sidecar: SidecarProcess, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "another-file"
    not_a_directory.write_text("")
    bad = str(not_a_directory)
    answer = httpx.post(
        f"{sidecar.api_url}/v1/models/resolve", json={"model": "litellm/m1", "directory": bad}, timeout=90
    )
    assert_refused(answer, "opencode cannot use directory")
    checks = [e for e in sidecar.events("opencode.check_failed") if e.get("directory") == bad]
    assert [e["attempt"] for e in checks] == list(range(1, RELOAD_ATTEMPTS + 1)), "not one every 50 ms"
    assert bad not in reloads(sidecar)["pending_reloads"]
