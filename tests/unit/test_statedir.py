"""The state directory's lock and owner-only modes, on a real temporary directory."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.opencode.config import write_atomically
from sidecar.statedir import (
    LOCK_NAME,
    StateDirBusy,
    claim_state_dir,
    lock_state_dir,
    parse_holder,
    private_mode,
    tighten_modes,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_second_lock_on_the_state_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    held = lock_state_dir(tmp_path, pid=4321)
    try:
        with pytest.raises(StateDirBusy) as refused:
            lock_state_dir(tmp_path, pid=9999)
        assert refused.value.holder == 4321
        assert str(refused.value) == f"{tmp_path} is in use by another sidecar (pid 4321)"
        assert mode(tmp_path / LOCK_NAME) == 0o600
        # opencode must never hold it (it would keep the directory locked after we die).
        assert not os.get_inheritable(held.fd)
    finally:
        held.release()
    again = lock_state_dir(tmp_path, pid=9999)
    again.release()
    assert (tmp_path / LOCK_NAME).read_text() == "9999\n"


def test_a_holder_that_has_not_written_its_pid_yet_is_waited_for_briefly(tmp_path: Path) -> None:
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    slept: list[float] = []
    try:
        with pytest.raises(StateDirBusy, match="a process whose pid it has not written yet") as refused:
            lock_state_dir(tmp_path, sleep=slept.append)
    finally:
        os.close(fd)
    assert refused.value.holder is None
    assert 0.5 <= sum(slept) <= 2


@pytest.mark.parametrize(("text", "pid"), [(b"123\n", 123), (b"", None), (b"x", None), (b"0", None), (b"-5", None)])
def test_parse_holder(text: bytes, pid: int | None) -> None:
    assert parse_holder(text) == pid


def test_private_mode_takes_group_and_other_bits_only() -> None:
    modes = (0o755, 0o644, 0o400, 0o2777, 0o700)
    assert [oct(private_mode(m)) for m in modes] == ["0o700", "0o600", "0o400", "0o2700", "0o700"]


def test_tighten_reaches_everything_under_the_dir_but_no_symlink_target_and_no_shared_file(tmp_path: Path) -> None:
    root = tmp_path / "state"
    (root / "opencode" / "data").mkdir(parents=True)
    files = {root / "catalog.json": 0o644, root / "opencode" / "data" / "opencode.db": 0o664, root / "own": 0o400}
    for path, file_mode in files.items():
        path.write_text("x")
        os.chmod(path, file_mode)
    for directory in (root, root / "opencode", root / "opencode" / "data"):
        os.chmod(directory, 0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    os.chmod(outside, 0o644)
    (root / "link").symlink_to(outside)
    shared = root / "shared.json"
    shared.write_text("{}")
    os.chmod(shared, 0o644)

    result = tighten_modes(root, skip={shared})

    database = root / "opencode" / "data" / "opencode.db"
    assert set(result.changed) == {root, root / "opencode", root / "opencode" / "data", root / "catalog.json", database}
    assert result.failed == []
    assert [mode(p) for p in (root, root / "opencode", root / "opencode" / "data")] == [0o700] * 3
    assert mode(root / "catalog.json") == 0o600 and mode(root / "opencode" / "data" / "opencode.db") == 0o600
    assert mode(root / "own") == 0o400
    assert mode(outside) == 0o644 and mode(shared) == 0o644
    assert tighten_modes(root, skip={shared}).changed == []


def test_files_written_to_the_state_dir_are_owner_only_unless_shared_on_purpose(tmp_path: Path) -> None:
    private = tmp_path / "new" / "catalog.json"
    write_atomically(private, "{}")
    assert mode(private) == 0o600 and mode(private.parent) == 0o700
    shared = tmp_path / "shared" / "opencode.json"
    write_atomically(shared, "{}", mode=0o644)
    assert mode(shared) == 0o644 and mode(shared.parent) & 0o055 == 0o055


def test_claiming_creates_the_dir_owner_only_and_says_what_it_tightened(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "state"
    with capture_logs() as logs:
        claim_state_dir(fresh).release()
    assert mode(fresh) == 0o700 and logs == []

    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    (old / "registered.json").write_text("{}")
    os.chmod(old / "registered.json", 0o644)
    with capture_logs() as logs:
        lock = claim_state_dir(old)
    try:
        assert [(e["event"], e["count"]) for e in logs] == [("state_dir.modes_tightened", 2)]
        # A second claim changes nothing before it is refused.
        os.chmod(old / "registered.json", 0o644)
        with pytest.raises(StateDirBusy):
            claim_state_dir(old)
        assert mode(old / "registered.json") == 0o644
    finally:
        lock.release()
