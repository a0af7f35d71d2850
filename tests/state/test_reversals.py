"""Reversal records have their own table (schema 2); a version 1 file is migrated once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from convergent.state import SCHEMA_VERSION, StateDB, open_state_dir

_VERSION_1 = (
    "CREATE TABLE schema (version INTEGER NOT NULL)",
    "CREATE TABLE refreshes (receiver TEXT NOT NULL, sender TEXT NOT NULL,"
    " PRIMARY KEY (receiver, sender)) WITHOUT ROWID",
    "CREATE TABLE secrets (resource TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "INSERT INTO schema (version) VALUES (1)",
    "INSERT INTO secrets VALUES ('password[db]', 's3cret')",
    "INSERT INTO refreshes VALUES ('exec[r]', 'file[/a]')",
    "INSERT INTO kv VALUES ('greeting', 'hello')",
    "INSERT INTO kv VALUES ('Reverse:not-one', 'case matters')",
    "INSERT INTO kv VALUES ('reverse:file[/etc/a.conf]', 'created')",
    "INSERT INTO kv VALUES ('reverse:file[/d]', '{\"mode\": \"0755\"}')",
)


def _version_1(path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in _VERSION_1:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def test_reversal_records_round_trip_and_none_forgets(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        assert db.get_reversal("file[/x]") is None
        db.set_reversal("file[/x]", "created")
        db.set_reversal("file[/x]", '{"mode": "0640"}')
        db.set_reversal("file[/y]", None)
    with StateDB(tmp_path / "state.db") as db:
        assert db.get_reversal("file[/x]") == '{"mode": "0640"}'
        db.set_reversal("file[/x]", None)
        assert db.get_reversal("file[/x]") is None


def test_a_kv_resource_cannot_overwrite_a_reversal_record(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        db.set_reversal("file[/x]", "created")
        db.set_kv("reverse:file[/x]", "forged")
        db.set_kv("file[/x]", "forged")
        assert db.get_reversal("file[/x]") == "created"
        assert db.get_kv("reverse:file[/x]") == "forged"


def test_a_version_1_file_is_migrated_once_keeping_everything(tmp_path: Path) -> None:
    path = _version_1(tmp_path / "state.db")
    with StateDB(path, readonly=True) as reader:  # a reader leaves it as it is
        assert reader.version == 1
        assert reader.get_reversal("file[/etc/a.conf]") == "created"
        assert reader.counts()["reversal records"] == 2
        assert reader.counts()["key/values"] == 2
    with StateDB(path) as db:
        assert db.version == SCHEMA_VERSION == 3
        assert db.get_reversal("file[/etc/a.conf]") == "created"
        assert db.get_reversal("file[/d]") == '{"mode": "0755"}'
        assert db.get_kv("reverse:file[/etc/a.conf]") is None  # left the user's space
        assert db.get_kv("greeting") == "hello"
        assert db.get_kv("Reverse:not-one") == "case matters"
        assert db.get_reversal("not-one") is None
        assert db.get_secret("password[db]") == "s3cret"
        assert db.pending_refreshes() == {"exec[r]": {"file[/a]"}}
        assert db.counts() == {
            "secrets": 1,
            "pending refreshes": 1,
            "key/values": 2,
            "reversal records": 2,
            "invocation records": 0,
        }
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema").fetchall() == [(3,)]
    finally:
        conn.close()
    with StateDB(path) as again:  # a second open finds nothing to do
        assert again.get_reversal("file[/etc/a.conf]") == "created"


def test_an_agent_adopts_a_version_1_directory(tmp_path: Path) -> None:
    _version_1(tmp_path / "state" / "state.db")
    with open_state_dir(str(tmp_path / "state"), mode="exclusive") as opened:
        assert opened.db is not None
        assert opened.db.get_reversal("file[/d]") == '{"mode": "0755"}'
    with StateDB(tmp_path / "state" / "state.db.backup", readonly=True) as backup:
        assert backup.version == 3
        assert backup.get_reversal("file[/etc/a.conf]") == "created"
