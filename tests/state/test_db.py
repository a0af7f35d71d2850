"""``StateDB``: real SQLite files in tmp_path, durability across SIGKILL, modes, errors."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.state import SCHEMA_VERSION, StateDB, StateError

BOUND = 10.0  # seconds any wait in these tests may take


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


# -- round trips -------------------------------------------------------------------------


def test_refreshes_round_trip_and_survive_reopening(db_path: Path) -> None:
    with StateDB(db_path) as db:
        assert db.pending_refreshes() == {}
        db.add_refreshes("exec[a]", ["noop[b]", "noop[c]"])
        db.add_refreshes("exec[a]", ["noop[b]"])  # a second change: still one refresh
        db.add_refreshes("file[/x]", ["noop[b]"])
        db.add_refreshes("file[/y]", [])
        assert db.pending_refreshes() == {
            "noop[b]": {"exec[a]", "file[/x]"},
            "noop[c]": {"exec[a]"},
        }
    with StateDB(db_path) as db:
        db.remove_refreshes("noop[b]", ["exec[a]", "file[/never]"])
        assert db.pending_refreshes() == {"noop[b]": {"file[/x]"}, "noop[c]": {"exec[a]"}}
    with StateDB(db_path) as db:
        db.remove_refreshes("noop[b]", ["file[/x]"])
        db.remove_refreshes("noop[c]", ["exec[a]"])
        assert db.pending_refreshes() == {}


def test_secrets_round_trip_overwrite_and_delete(db_path: Path) -> None:
    with StateDB(db_path) as db:
        assert db.get_secret("password[db]") is None
        db.set_secret("password[db]", "first")
        db.set_secret("password[other]", "x'); DROP TABLE secrets; --")
        db.set_secret("password[db]", "second")
    with StateDB(db_path) as db:
        assert db.get_secret("password[db]") == "second"
        assert db.get_secret("password[other]") == "x'); DROP TABLE secrets; --"
        db.delete_secret("password[db]")
        assert db.get_secret("password[db]") is None


def test_key_values_round_trip_and_none_deletes(db_path: Path) -> None:
    with StateDB(db_path) as db:
        assert db.get_kv("greeting") is None
        db.set_kv("greeting", "hello")
        db.set_kv("greeting", "héllo\nworld")
        db.set_kv("empty", "")
    with StateDB(db_path) as db:
        assert db.get_kv("greeting") == "héllo\nworld"
        assert db.get_kv("empty") == ""
        db.set_kv("greeting", None)
        db.set_kv("never-set", None)
        assert db.get_kv("greeting") is None


# -- durability --------------------------------------------------------------------------

_WRITER = """
import sys
from convergent.state import StateDB

db = StateDB(sys.argv[1])
db.add_refreshes("exec[a]", ["noop[b]", "noop[c]"])
print("written", flush=True)
sys.stdin.read()  # keep the connection open until killed
"""


def test_pending_refreshes_survive_sigkill_right_after_the_write(db_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], BOUND)
        assert readable, "the writer did not report its write in time"
        assert proc.stdout.readline() == "written\n"
        # The connection is still open: the rows are in the WAL, not checkpointed.
        assert db_path.with_name("state.db-wal").stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(BOUND) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BOUND)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    with StateDB(db_path) as db:
        assert db.pending_refreshes() == {"noop[b]": {"exec[a]"}, "noop[c]": {"exec[a]"}}


def test_writes_use_wal_with_full_sync(db_path: Path) -> None:
    with StateDB(db_path) as db:
        db.set_kv("k", "v")
        conn = db._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# -- modes -------------------------------------------------------------------------------


def test_new_database_is_0600_in_a_0700_directory(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "deep" / "state" / "state.db"
        with StateDB(path) as db:
            db.set_secret("password[db]", "s3cret")
            assert mode(path.parent) == 0o700
            assert mode(path) == 0o600
            for suffix in ("-wal", "-shm"):
                companion = path.with_name(path.name + suffix)
                assert companion.exists()
                assert mode(companion) == 0o600, suffix
    finally:
        os.umask(old_umask)


def test_existing_database_with_a_loose_mode_is_made_0600(db_path: Path) -> None:
    with StateDB(db_path) as db:
        db.set_secret("password[db]", "s3cret")
    db_path.chmod(0o644)
    with StateDB(db_path) as db:
        assert mode(db_path) == 0o600
        assert db.get_secret("password[db]") == "s3cret"


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    StateDB(directory / "state.db").close()
    assert mode(directory) == 0o755
    assert mode(directory / "state.db") == 0o600


# -- read only ---------------------------------------------------------------------------


def test_readonly_reads_and_never_writes(db_path: Path) -> None:
    with StateDB(db_path) as db:
        db.add_refreshes("exec[a]", ["noop[b]"])
        db.set_secret("password[db]", "s3cret")
        db.set_kv("greeting", "hello")
    before = db_path.read_bytes()
    with StateDB(db_path, readonly=True) as db:
        assert db.pending_refreshes() == {"noop[b]": {"exec[a]"}}
        assert db.get_secret("password[db]") == "s3cret"
        assert db.get_kv("greeting") == "hello"
        writes = [
            lambda: db.add_refreshes("exec[x]", ["noop[y]"]),
            lambda: db.remove_refreshes("noop[b]", ["exec[a]"]),
            lambda: db.set_secret("password[db]", "other"),
            lambda: db.delete_secret("password[db]"),
            lambda: db.set_kv("greeting", "bye"),
            lambda: db.set_kv("greeting", None),
        ]
        for write in writes:
            with pytest.raises(StateError, match="read only"):
                write()
        assert db.get_kv("greeting") == "hello"
    assert db_path.read_bytes() == before
    with StateDB(db_path) as db:
        assert db.pending_refreshes() == {"noop[b]": {"exec[a]"}}
        assert db.get_secret("password[db]") == "s3cret"


def test_readonly_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    with pytest.raises(StateError, match="does not exist") as info:
        StateDB(path, readonly=True)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_readonly_of_an_empty_file_reads_nothing_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    with StateDB(path, readonly=True) as db:
        assert db.pending_refreshes() == {}
        assert db.get_secret("password[db]") is None
        assert db.get_kv("k") is None
    assert path.read_bytes() == b""


# -- errors ------------------------------------------------------------------------------


def test_newer_schema_is_refused_with_upgrade_advice(db_path: Path) -> None:
    StateDB(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    for readonly in (False, True):
        with pytest.raises(StateError) as info:
            StateDB(db_path, readonly=readonly)
        message = str(info.value)
        assert f"state database {db_path}" in message
        assert f"was written by a newer convergent (schema {SCHEMA_VERSION + 1}" in message
        assert "upgrade or use another state directory" in message


def test_corrupt_file_is_refused_naming_the_path_and_the_fix(db_path: Path) -> None:
    db_path.parent.mkdir()
    garbage = b"this is not an sqlite database\n" * 200
    db_path.write_bytes(garbage)
    for readonly in (False, True):
        with pytest.raises(StateError) as info:
            StateDB(db_path, readonly=readonly)
        message = str(info.value)
        assert str(db_path) in message
        assert "not a valid SQLite database" in message
        assert f"convergent state restore --state-dir {db_path.parent}" in message
        assert f"convergent state reset --yes --state-dir {db_path.parent}" in message
    assert db_path.read_bytes() == garbage


def test_another_programs_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir()
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="not convergent's"):
        StateDB(db_path)
    conn = sqlite3.connect(db_path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"users"}


def test_a_directory_in_place_of_the_file_is_a_clear_error(db_path: Path) -> None:
    db_path.mkdir(parents=True)
    with pytest.raises(StateError, match=str(db_path)):
        StateDB(db_path)
