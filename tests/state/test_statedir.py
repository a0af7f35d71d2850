"""``open_state_dir``: locks, the initialised marker, the backup; real files in tmp_path."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from convergent.state import StateBusy, StateDamaged, StateDB, StateError, open_state_dir
from convergent.state.statedir import BACKUP, LOCK, MARKER


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_open_makes_the_directory_the_database_the_marker_and_the_backup(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a" / "state"
    with open_state_dir(str(path), mode="exclusive") as opened:
        assert opened.db is not None
        assert (path / LOCK).read_text() == f"{os.getpid()}\n"
        opened.db.set_secret("password[x]", "s3cret")
    assert mode(path) == 0o700
    for name in ("state.db", MARKER, BACKUP, LOCK):
        assert mode(path / name) == 0o600, name
    assert (path / "state.db").stat().st_size > 0  # checkpointed: never 0 bytes once made
    assert (path / LOCK).read_text() == ""  # no PID once let go
    with StateDB(path / BACKUP, readonly=True) as backup:  # taken at close: it wrote
        assert backup.get_secret("password[x]") == "s3cret"
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]


def test_a_second_exclusive_open_is_refused_and_shared_is_not(tmp_path: Path) -> None:
    with open_state_dir(str(tmp_path), mode="exclusive"):
        with pytest.raises(StateBusy, match="is in use by another convergent"):
            open_state_dir(str(tmp_path), mode="exclusive")
        with open_state_dir(str(tmp_path), mode="shared") as reader:
            assert reader.db is not None and reader.db.readonly
    with open_state_dir(str(tmp_path), mode="exclusive"):
        pass


def test_shared_open_of_a_new_directory_creates_nothing(tmp_path: Path) -> None:
    with open_state_dir(str(tmp_path / "none"), mode="shared") as opened:
        assert opened.db is None
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    with open_state_dir(str(tmp_path / "empty"), mode="shared") as opened:
        assert opened.db is None
    assert not (tmp_path / "empty" / "state.db").exists()


def test_a_database_from_before_the_marker_is_checked_and_adopted(tmp_path: Path) -> None:
    StateDB(tmp_path / "state.db").close()
    assert not (tmp_path / MARKER).exists()
    with open_state_dir(str(tmp_path), mode="exclusive"):
        pass
    assert (tmp_path / MARKER).exists()


def test_an_empty_database_without_the_marker_is_a_first_start_killed_early(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.db").write_bytes(b"")
    with open_state_dir(str(tmp_path), mode="exclusive") as opened:
        assert opened.db is not None
    assert (tmp_path / MARKER).exists()


def test_a_damaged_database_without_the_marker_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StateDamaged, match="not a valid SQLite database"):
        open_state_dir(str(tmp_path), mode="exclusive")
    assert (tmp_path / "state.db").read_bytes() == b"garbage" * 1000
    assert not (tmp_path / MARKER).exists()


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    with open_state_dir(str(tmp_path), mode="exclusive"):
        pass
    (tmp_path / "state.db").write_bytes(b"")
    for _ in range(2):  # the second attempt is not told the directory is in use
        with pytest.raises(StateDamaged, match="is empty"):
            open_state_dir(str(tmp_path), mode="exclusive")


def test_the_backup_is_a_standalone_database(tmp_path: Path) -> None:
    with open_state_dir(str(tmp_path), mode="exclusive") as opened:
        assert opened.db is not None
        opened.db.set_kv("k", "v")
    conn = sqlite3.connect(tmp_path / BACKUP)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT value FROM kv").fetchall() == [("v",)]
    finally:
        conn.close()


def test_a_file_in_place_of_the_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    for access in ("exclusive", "shared"):
        with pytest.raises(StateError, match="not a directory"):
            open_state_dir(str(tmp_path / "state"), mode=access)  # type: ignore[arg-type]


def test_a_state_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    """Another user who may write in it could swap the temp file of the backup for a
    symlink between two steps of the agent; so the agent does not use such a directory."""
    path = tmp_path / "state"
    path.mkdir()
    for loose in (0o777, 0o770, 0o702):
        path.chmod(loose)
        with pytest.raises(StateError, match=rf"mode {loose:04o}.*chmod 0700 {path}"):
            open_state_dir(str(path), mode="exclusive")
    assert list(path.iterdir()) == []
    path.chmod(0o755)  # others may read and enter, not write: allowed
    with open_state_dir(str(path), mode="exclusive"):
        pass


def test_a_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give the directory away")
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(StateError, match="belongs to uid 65534, not to this user"):
        open_state_dir(str(path), mode="exclusive")
    assert list(path.iterdir()) == []


def test_a_fifo_or_symlink_in_place_of_the_lock_is_refused_without_blocking(
    tmp_path: Path,
) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text("not to be touched\n")
    os.mkfifo(tmp_path / LOCK)
    with pytest.raises(StateError, match=f"state file {tmp_path}/lock: is not a regular file"):
        open_state_dir(str(tmp_path), mode="exclusive")
    (tmp_path / LOCK).unlink()
    (tmp_path / LOCK).symlink_to(decoy)
    with pytest.raises(StateError, match="cannot open the lock file"):
        open_state_dir(str(tmp_path), mode="exclusive")
    assert decoy.read_text() == "not to be touched\n"


def test_after_lock_runs_once_the_lock_is_held_and_before_the_database_opens(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, str, bool]] = []

    def after_lock(path: str) -> None:
        with pytest.raises(StateBusy):
            open_state_dir(path, mode="exclusive")
        seen.append((path, (Path(path) / LOCK).read_text(), (Path(path) / MARKER).exists()))

    with open_state_dir(str(tmp_path), mode="exclusive", after_lock=after_lock):
        pass
    assert seen == [(str(tmp_path), f"{os.getpid()}\n", False)]
    with open_state_dir(str(tmp_path), mode="shared", after_lock=after_lock):
        pass
    assert len(seen) == 1  # readers never reap


def test_a_start_copies_the_database_again_only_when_it_changed(tmp_path: Path) -> None:
    """The backup holds the database as the last start found it: a start that finds the
    database unchanged since the backup was made leaves it (no copy, no fsync); a
    database changed behind the backup's back (an agent killed before its closing copy)
    is copied again."""
    with open_state_dir(str(tmp_path), mode="exclusive") as opened:
        assert opened.db is not None
        opened.db.set_kv("k", "one")
    made = (tmp_path / BACKUP).stat()
    with open_state_dir(str(tmp_path), mode="exclusive"):
        pass
    assert (tmp_path / BACKUP).stat().st_ino == made.st_ino  # unchanged: not copied again
    with StateDB(tmp_path / "state.db") as db:  # a write the closing copy never saw
        db.set_kv("k", "two")
    with (
        open_state_dir(str(tmp_path), mode="exclusive"),
        StateDB(tmp_path / BACKUP, readonly=True) as backup,
    ):
        assert backup.get_kv("k") == "two"


def test_the_directory_an_agent_writes_in_is_the_one_it_locked(tmp_path: Path) -> None:
    """``StateDir.directory()`` gives the locked directory, never one put at its path
    since (what the agent writes by name relative to it, the policy cache, lands there)."""
    path = tmp_path / "state"
    with open_state_dir(str(path), mode="exclusive") as opened:
        fd = opened.directory()
        try:
            assert os.path.samestat(os.fstat(fd), path.stat())
        finally:
            os.close(fd)
        path.rename(tmp_path / "moved")
        path.mkdir(mode=0o700)  # another directory, of the same user, at the path
        with pytest.raises(StateError, match="no longer the directory this agent locked"):
            opened.directory()
        path.rmdir()
        (tmp_path / "moved").rename(path)
    with (
        open_state_dir(str(path), mode="shared") as reader,
        pytest.raises(StateError, match="not held by this agent"),
    ):
        reader.directory()
