"""``StateDB``: the host's durable state, one SQLite file under the state directory.

It holds what must outlive the agent process:

- ``refreshes``: pending refresh notifications, ``(receiver, sender)``. A sender writes
  them before it is marked done; a receiver removes them only after it handled them, so
  a SIGKILL or a power loss between the two never loses a refresh.
- ``secrets``: generated secrets (the ``password`` kind), keyed by ``kind[name]``.
- ``kv``: key/values of the ``kv`` kind on the local world.
- ``reversals``: what a resource with ``meta: {reverse: true}`` recorded to undo itself,
  keyed by ``kind[name]``; apart from ``kv`` so that no ``kv`` resource can overwrite it.
- ``invocations``: one row per ``convergent invoke`` (who, when, switches with secrets
  redacted, outcome), read and written by :mod:`convergent.state.invocations`.

Schema versions: 1 kept reversal records in ``kv`` under ``reverse:kind[name]``; 2 moves
them into ``reversals`` (done once, in one transaction, when a writer opens a version 1
file; a reader of a version 1 file finds them where they are). 3 adds ``invocations``.

This class is the database alone. An agent opens its state directory with
:func:`convergent.state.statedir.open_state_dir`, which adds the lock (one agent per
directory), refuses a damaged or vanished database and keeps the backup.

Every write is committed (``synchronous=FULL``: the WAL is fsynced) before the call
returns. The file is created with mode 0600 (an existing file with another mode is fixed
on open) in a directory created with mode 0700; SQLite gives its ``-wal`` and ``-shm``
companions the mode of the database file.

``readonly=True`` (used under noop) opens the file with ``mode=ro``: the database is
never written and every write raises :class:`StateError`. SQLite may still create its
``-wal``/``-shm`` companions, which it needs to read safely next to a running agent.

The calls are small and local, so they are synchronous; they are made from the event
loop's thread only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator

from convergent.errors import ConvergentError

__all__ = [
    "SCHEMA_VERSION",
    "STATE_DB",
    "StateBusy",
    "StateDB",
    "StateDamaged",
    "StateError",
    "fs_hint",
    "open_state",
    "way_out",
]

SCHEMA_VERSION = 3

_REVERSALS = "CREATE TABLE reversals (resource TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
_INVOCATIONS = (
    "CREATE TABLE invocations (id INTEGER PRIMARY KEY, started REAL NOT NULL, record TEXT NOT NULL)"
)
_SCHEMA = (
    "CREATE TABLE schema (version INTEGER NOT NULL)",
    "CREATE TABLE refreshes (receiver TEXT NOT NULL, sender TEXT NOT NULL,"
    " PRIMARY KEY (receiver, sender)) WITHOUT ROWID",
    "CREATE TABLE secrets (resource TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    _REVERSALS,
    _INVOCATIONS,
)
_REVERSE_PREFIX = "reverse:"  # schema 1 kept reversal records in kv under this prefix
_TABLES = frozenset({"schema", "refreshes", "secrets", "kv", "reversals", "invocations"})
_IS_REVERSAL = f"substr(key, 1, {len(_REVERSE_PREFIX)}) = '{_REVERSE_PREFIX}'"
_COUNTED = {
    "secrets": "SELECT count(*) FROM secrets",
    "pending refreshes": "SELECT count(*) FROM refreshes",
    "key/values": "SELECT count(*) FROM kv",
    "reversal records": "SELECT count(*) FROM reversals",
    "invocation records": "SELECT count(*) FROM invocations",
}
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_BUSY_TIMEOUT = 10.0  # seconds to wait for another process's write lock


class StateError(ConvergentError):
    """The state database cannot be opened, read or written; the message names the file."""

    def __init__(
        self, path: str | os.PathLike[str], message: str, *, what: str = "state database"
    ) -> None:
        self.path = os.fspath(path)
        self.message = message
        super().__init__(f"{what} {self.path}: {message}")


class StateDamaged(StateError):
    """The database is damaged, missing or not a database; it is never silently replaced.

    The message ends with the way out: the ``convergent state`` commands for its directory.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.problem = problem  # what is wrong, without the way out
        super().__init__(path, f"{problem}. {way_out(os.path.dirname(os.fspath(path)))}")


def way_out(state_dir: str, *, check: bool = True) -> str:
    """What to do about a damaged state database in ``state_dir``: the three commands."""
    import shlex

    option = f"--state-dir {shlex.quote(os.path.abspath(state_dir))}"
    fixes = (
        f"bring back the copy taken at the last start: convergent state restore {option}; "
        f"or start afresh, losing what it held: convergent state reset --yes {option}"
    )
    if not check:
        return fixes[0].upper() + fixes[1:]
    return (
        "convergent does not replace it by itself (it holds secrets and pending refreshes). "
        f"See what is wrong: convergent state check {option}; {fixes}"
    )


class StateBusy(StateError):
    """Another convergent holds the state directory; ``pid`` is its process id, if known."""

    def __init__(self, path: str | os.PathLike[str], message: str, pid: int | None) -> None:
        self.path = os.fspath(path)
        self.message = message
        self.pid = pid
        ConvergentError.__init__(self, message)  # the message names the directory itself


class StateDB:
    """The agent's durable state. Every write is committed before the call returns."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = os.path.abspath(path)  # str: pathlib costs ~4 ms of start-up
        self.readonly = readonly
        self._empty = False  # read only, and the file has no convergent tables yet
        self.version = SCHEMA_VERSION  # the file's schema (a reader leaves a 1 as it is)
        if readonly:
            self._conn = self._open_readonly()
        else:
            self._conn = self._open_writable()
        try:
            self._check_schema()
        except BaseException:
            self._conn.close()
            raise

    # -- life cycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (idempotent). The last writer to close checkpoints the WAL."""
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StateDB {self.path}{' (read only)' if self.readonly else ''}>"

    # -- pending refresh notifications: written before the sender is done -----------

    def add_refreshes(self, sender: str, receivers: Iterable[str]) -> None:
        """Record that ``sender`` owes each receiver a refresh (one transaction)."""
        rows = [(receiver, sender) for receiver in receivers]
        if not rows:
            return
        with self._write():
            self._conn.executemany(
                "INSERT OR IGNORE INTO refreshes (receiver, sender) VALUES (?, ?)", rows
            )

    def pending_refreshes(self) -> dict[str, set[str]]:
        """receiver -> senders whose refresh it has not handled yet."""
        pending: dict[str, set[str]] = {}
        if self._empty:
            return pending
        with self._errors("read pending refreshes"):
            rows = self._conn.execute("SELECT receiver, sender FROM refreshes").fetchall()
        for receiver, sender in rows:
            pending.setdefault(receiver, set()).add(sender)
        return pending

    def remove_refreshes(self, receiver: str, senders: Iterable[str]) -> None:
        """Forget the refreshes ``receiver`` has handled (one transaction)."""
        rows = [(receiver, sender) for sender in senders]
        if not rows:
            return
        with self._write():
            self._conn.executemany("DELETE FROM refreshes WHERE receiver = ? AND sender = ?", rows)

    # -- secrets (password kind) ------------------------------------------------------

    def get_secret(self, resource: str) -> str | None:
        """The secret stored for ``resource`` (``kind[name]``), or None."""
        return self._get("secrets", "resource", resource)

    def set_secret(self, resource: str, value: str) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO secrets (resource, value) VALUES (?, ?)"
                " ON CONFLICT (resource) DO UPDATE SET value = excluded.value",
                (resource, value),
            )

    def delete_secret(self, resource: str) -> None:
        with self._write():
            self._conn.execute("DELETE FROM secrets WHERE resource = ?", (resource,))

    def secret_values(self) -> list[str]:
        """Every stored secret value (the engine hides them in reports from the start)."""
        if self._empty:
            return []
        with self._errors("read secrets"):
            rows = self._conn.execute("SELECT value FROM secrets").fetchall()
        return [value for (value,) in rows]

    # -- key/values (kv kind) ---------------------------------------------------------

    def get_kv(self, key: str) -> str | None:
        return self._get("kv", "key", key)

    def set_kv(self, key: str, value: str | None) -> None:
        """Set ``key`` to ``value``; None deletes it."""
        with self._write():
            if value is None:
                self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO kv (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def kv_prefix(self, prefix: str) -> dict[str, str]:
        """Every key/value whose key starts with ``prefix``."""
        if self._empty:
            return {}
        query = "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ?"
        if self.version < 2:
            query += f" AND NOT {_IS_REVERSAL}"
        with self._errors("read key/values"):
            rows = self._conn.execute(query, (len(prefix), prefix)).fetchall()
        return dict(rows)

    # -- reversal records (meta: {reverse: true}) --------------------------------------

    def get_reversal(self, resource: str) -> str | None:
        """What ``resource`` (``kind[name]``) recorded to undo itself, or None."""
        if self.version < 2:  # a reader of a schema 1 file: they are still in kv
            return self._get("kv", "key", _REVERSE_PREFIX + resource)
        return self._get("reversals", "resource", resource)

    def set_reversal(self, resource: str, value: str | None) -> None:
        """Record how to undo ``resource``; None forgets it."""
        with self._write():
            if value is None:
                self._conn.execute("DELETE FROM reversals WHERE resource = ?", (resource,))
            else:
                self._conn.execute(
                    "INSERT INTO reversals (resource, value) VALUES (?, ?)"
                    " ON CONFLICT (resource) DO UPDATE SET value = excluded.value",
                    (resource, value),
                )

    # -- invocation records (convergent invoke): see convergent.state.invocations -------

    def add_invocation(self, started: float, record: str) -> int:
        """Store one invocation's record (JSON) and return its id."""
        with self._write():
            cursor = self._conn.execute(
                "INSERT INTO invocations (started, record) VALUES (?, ?)", (started, record)
            )
        return int(cursor.lastrowid or 0)

    def set_invocation(self, row: int, record: str) -> None:
        """Replace the record of invocation ``row`` (its outcome is known)."""
        with self._write():
            self._conn.execute("UPDATE invocations SET record = ? WHERE id = ?", (record, row))

    def invocations(self, since: float = 0.0) -> list[tuple[int, float, str]]:
        """``(id, started, record)`` of the invocations started at ``since`` or later, oldest
        first."""
        if self._empty or self.version < 3:
            return []
        with self._errors("read invocations"):
            rows = self._conn.execute(
                "SELECT id, started, record FROM invocations WHERE started >= ? ORDER BY id",
                (since,),
            ).fetchall()
        return [(int(i), float(t), str(r)) for i, t, r in rows]

    # -- upkeep (used by the state directory) ------------------------------------------

    def quick_check(self) -> str | None:
        """None when SQLite's ``PRAGMA quick_check`` finds the file sound, else what it found."""
        with self._errors("check the database"):
            rows = self._conn.execute("PRAGMA quick_check(5)").fetchall()
        found = [str(row[0]) for row in rows]
        return None if found == ["ok"] else "; ".join(found)

    def counts(self) -> dict[str, int]:
        """Rows per kind of record: what a reset would lose."""
        if self._empty:
            return dict.fromkeys(_COUNTED, 0)
        counts: dict[str, int] = {}
        with self._errors("count the records"):
            for name, query in _COUNTED.items():
                if self.version < 2 and name == "key/values":
                    query = f"SELECT count(*) FROM kv WHERE NOT {_IS_REVERSAL}"
                if self.version < 2 and name == "reversal records":
                    query = f"SELECT count(*) FROM kv WHERE {_IS_REVERSAL}"
                if self.version < 3 and name == "invocation records":
                    query = "SELECT 0"
                counts[name] = int(self._conn.execute(query).fetchone()[0])
        return counts

    @property
    def written(self) -> bool:
        """Whether this connection has changed anything since it was opened."""
        return self._conn.total_changes > 0

    def backup(self, target: str) -> None:
        """Copy the database, as one consistent snapshot, into the existing empty ``target``
        (SQLite's backup API), which the caller fsyncs: nothing here syncs it."""
        with self._errors(f"back up to {target}"):
            copy = sqlite3.connect(target, isolation_level=None)
            try:
                # A temp file, fsynced once by the caller: no journal, no syncs of its own
                # (with them a copy cost ~25 ms of start-up here, without them ~2 ms).
                copy.execute("PRAGMA synchronous=OFF")
                copy.execute("PRAGMA journal_mode=OFF").fetchone()
                self._conn.backup(copy)
                # A file that stands alone: no -wal or -shm beside it when it is read.
                copy.execute("PRAGMA journal_mode=DELETE").fetchone()
            finally:
                copy.close()

    def checkpoint(self) -> None:
        """Move the WAL's content into the database file, which is then fsynced."""
        with self._errors("checkpoint"):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    # -- helpers ----------------------------------------------------------------------

    def _get(self, table: str, column: str, key: str) -> str | None:
        if self._empty:
            return None
        with self._errors(f"read {table}"):
            row = self._conn.execute(
                f"SELECT value FROM {table} WHERE {column} = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One committed transaction; rolled back if the body raises."""
        if self.readonly:
            raise StateError(self.path, "opened read only (noop): nothing may be written to it")
        with self._errors("write"):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn an sqlite3 error into a StateError that names the file and a fix."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._explain(action, exc) from exc

    def _explain(self, action: str, exc: sqlite3.Error) -> StateError:
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and (
            "not a database" in text or "malformed" in text or "corrupt" in text
        ):
            return StateDamaged(self.path, f"is damaged: not a valid SQLite database ({text})")
        if "locked" in text or "busy" in text:
            return StateError(
                self.path,
                f"cannot {action}: {text} (another convergent holds it; "
                "stop it or use another state directory)",
            )
        return StateError(self.path, f"cannot {action}: {text}{fs_hint(self.path)}")

    def _open_writable(self) -> sqlite3.Connection:
        path = self.path
        created = _make_dir(os.path.dirname(path))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE)
        except OSError as exc:
            raise StateError(path, f"cannot open: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StateError(path, "is not a regular file; move it away")
            if stat.S_IMODE(info.st_mode) != _FILE_MODE:
                os.fchmod(fd, _FILE_MODE)  # it holds secrets: owner only
            if info.st_size == 0:
                os.fsync(fd)
                created = True
        except OSError as exc:
            raise StateError(path, f"cannot secure the file: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm", "-journal"):
            companion = path + suffix
            try:
                mode = os.lstat(companion).st_mode
                if stat.S_ISREG(mode) and stat.S_IMODE(mode) != _FILE_MODE:
                    os.chmod(companion, _FILE_MODE)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StateError(companion, f"cannot secure the file: {exc.strerror}") from exc
        if created:
            _fsync_dir(os.path.dirname(path))
        try:
            conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise self._explain("open", exc) from exc
        try:
            with self._errors("open"):
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StateError(path, f"cannot switch to WAL journal mode (got {mode})")
                conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        path = self.path
        if not os.path.isfile(path):
            what = "does not exist" if not os.path.exists(path) else "is not a regular file"
            raise StateError(path, f"{what} (nothing to read under noop)")
        from urllib.parse import quote

        # On a read-only file system nobody can write it, and SQLite could not create the
        # -shm a WAL reader needs: read it as immutable.
        options = "?mode=ro&immutable=1" if _read_only_fs(path) else "?mode=ro"
        try:
            return sqlite3.connect(
                "file://" + quote(os.fsencode(path)) + options,
                uri=True,
                timeout=_BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=True,
            )
        except sqlite3.Error as exc:
            raise self._explain("open", exc) from exc

    def _check_schema(self) -> None:
        """Create the tables in a new file; refuse a file written by a newer convergent."""
        with self._errors("read the schema"):
            names = {
                row[0]
                for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        if "schema" not in names:
            if names - _TABLES:
                raise StateError(
                    self.path,
                    "is an SQLite database, but not convergent's (tables: "
                    f"{', '.join(sorted(names))}); move it away or use another state directory",
                )
            if self.readonly:
                self._empty = True
                return
            if names:  # some of our tables, but no version: a creation cannot leave that
                raise StateDamaged(self.path, "is damaged: its schema table is missing")
            with self._write():
                for statement in _SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute("INSERT INTO schema (version) VALUES (?)", (SCHEMA_VERSION,))
            return
        with self._errors("read the schema"):
            row = self._conn.execute("SELECT max(version) FROM schema").fetchone()
        version = row[0] if row else None
        if not isinstance(version, int) or version < 1:
            raise StateDamaged(self.path, "is damaged: it has no schema version")
        if version > SCHEMA_VERSION:
            raise StateError(
                self.path,
                f"was written by a newer convergent (schema {version}; this one knows "
                f"{SCHEMA_VERSION}); upgrade or use another state directory",
            )
        self.version = version
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        """Bring a file of an older schema up to this one, in one transaction."""
        with self._write():
            if version < 2:  # reversal records leave the user's key/values
                self._conn.execute(_REVERSALS)
                self._conn.execute(
                    "INSERT INTO reversals (resource, value) SELECT"
                    f" substr(key, {len(_REVERSE_PREFIX) + 1}), value FROM kv"
                    f" WHERE {_IS_REVERSAL}"
                )
                self._conn.execute(f"DELETE FROM kv WHERE {_IS_REVERSAL}")
            if version < 3:  # the records of convergent invoke
                self._conn.execute(_INVOCATIONS)
            self._conn.execute("UPDATE schema SET version = ?", (SCHEMA_VERSION,))
        self.version = SCHEMA_VERSION


def _make_dir(path: str) -> bool:
    """Create ``path`` (mode 0700, parents as needed); an existing directory is kept.

    Returns True when it was created.
    """
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise StateError(
                path, "exists and is not a directory; move it away", what="state directory"
            ) from None
        return False
    except OSError as exc:
        reason = f"{exc.strerror or exc}{fs_hint(path)}"
        raise StateError(
            path, f"cannot create the directory: {reason}", what="state directory"
        ) from exc
    os.chmod(path, _DIR_MODE)  # exactly 0700, whatever the umask
    _fsync_dir(os.path.dirname(path))
    return True


def fs_hint(path: str) -> str:
    """`` (the file system is full: ...)`` when the file system of ``path`` is full or
    read-only (SQLite names either "disk I/O error"), else nothing."""
    try:
        info = os.statvfs(path if os.path.exists(path) else os.path.dirname(path))
    except OSError:
        return ""
    if info.f_flag & os.ST_RDONLY:
        return " (the file system is read-only: remount it read-write or use another one)"
    if info.f_bavail == 0 or info.f_favail == 0:
        return " (the file system is full: free some space)"
    return ""


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _fsync_dir(path: str) -> None:
    """Make a new directory entry under ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


STATE_DB = "state.db"  # the state database's file name in the state directory


def open_state(state_dir: str, *, readonly: bool) -> StateDB | None:
    """The state database ``state_dir/state.db``; under noop read only, and only if it exists.

    The database alone: no lock, no damage check, no backup. A run opens its state
    directory with :func:`convergent.state.statedir.open_state_dir` instead.
    """
    path = os.path.join(state_dir, STATE_DB)
    if readonly and not os.path.exists(path):
        return None
    return StateDB(path, readonly=readonly)
