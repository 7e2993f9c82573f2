"""The state files on their own: what is read back at start, and which writes happen."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.catalog import Catalog, ModelInfo
from sidecar.opencode.config import write_atomically
from sidecar.statefiles import StateFiles, StatePaths

pytestmark = pytest.mark.anyio


def catalog(*ids: str) -> Catalog:
    return Catalog(ModelInfo(id=i, display_name=i) for i in ids)


class Disk:
    """write_atomically, recording each path written, until the disk is "full"."""

    def __init__(self) -> None:
        self.full = False
        self.written: list[str] = []

    def write(self, path: Path, text: str) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written.append(path.name)
        write_atomically(path, text)


async def test_only_the_files_whose_text_changed_are_written(tmp_path: Path) -> None:
    disk = Disk()
    files = StateFiles(StatePaths(tmp_path), disk.write)
    assert await files.write({"litellm": catalog("a")}, {}, "config 1\n") == "written"
    assert sorted(disk.written) == ["catalog-litellm.json", "opencode.json", "registered.json"]
    disk.written.clear()
    assert await files.write({"litellm": catalog("a")}, {}, "config 1\n") == "unchanged"
    assert disk.written == []
    registered = {"litellm": {m.id: m for m in catalog("x")}}
    assert await files.write({"litellm": catalog("a")}, registered, "config 1\n") == "unchanged"
    assert disk.written == ["registered.json"]  # the registry changed, the config did not
    assert files.writes == {"written": 1} and files.config_digest is not None


async def test_a_failed_write_is_said_once_and_every_file_tried_again_by_the_next(tmp_path: Path) -> None:
    disk = Disk()
    files = StateFiles(StatePaths(tmp_path), disk.write)
    disk.full = True
    with capture_logs() as logs:
        assert await files.write({"litellm": catalog("a")}, {}, "config\n") == "failed"
    assert [e["event"] for e in logs] == ["state.write_failed"]
    assert files.failed and "No space left on device" in (files.last_error or "")
    assert files.config_digest is None and files.writes == {"failed": 1}
    disk.full = False
    with capture_logs() as logs:
        assert await files.write({"litellm": catalog("a")}, {}, "config\n") == "written"
    assert [e["event"] for e in logs] == ["state.write_recovered"]
    assert sorted(disk.written) == ["catalog-litellm.json", "opencode.json", "registered.json"]
    assert not files.failed and files.last_error is None


async def test_what_was_written_is_read_back(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    registered = {"litellm": {m.id: m for m in catalog("x")}, "gone": {m.id: m for m in catalog("y")}}
    await StateFiles(paths).write({"litellm": catalog("a", "b")}, registered, "{}\n")
    again = StateFiles(paths)
    saved = again.saved_catalog("litellm", first_gateway=True)
    assert saved.catalog.ids == ["a", "b"] and saved.path == paths.catalog("litellm")
    assert saved.saved_at == paths.catalog("litellm").stat().st_mtime
    restored = again.saved_registered("litellm", ["litellm"])  # the gateway `gone` is no longer configured
    assert list(restored) == ["litellm"] and restored["litellm"]["x"].registered


def test_the_first_gateway_falls_back_to_the_list_saved_before_several_gateways(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    paths.legacy_catalog.write_text(catalog("old").to_json())
    files = StateFiles(paths)
    assert files.saved_catalog("litellm", first_gateway=True).catalog.ids == ["old"]
    other = files.saved_catalog("other", first_gateway=False)
    assert len(other.catalog) == 0 and other.saved_at is None


def test_an_unreadable_file_is_said_and_read_as_empty(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    paths.catalog("litellm").write_text("{not json")
    paths.registered.write_text(json.dumps({"litellm": [{"no": "id"}]}))
    files = StateFiles(paths)
    with capture_logs() as logs:
        assert len(files.saved_catalog("litellm", first_gateway=True).catalog) == 0
        assert files.saved_registered("litellm", ["litellm"]) == {}
    assert [e["event"] for e in logs] == ["state.unreadable", "state.unreadable"]
