"""The event history on disk: ``STATE_DIR/events.db``, bounded by age and by count.

Every outcome of a check/apply pass (:mod:`convergent.engine.events`) is a row: time
(Unix seconds), host, resource (``kind[name]``), outcome, seconds, summary and cause.
The agent buffers rows in memory and writes them in one transaction at most every
``FLUSH`` seconds and at the end of the run; each write then drops what is older than
``max_age`` seconds and all but the newest ``max_count`` rows (rows are appended in
time order, so both bounds are found by id, without an index on time).

The history lives apart from ``state.db``: that file is checked and copied to its backup
at every start (and again at the end of a run that wrote to it), and a long history
would make every start slower; nor is the history precious as secrets and pending
refreshes are. A damaged ``events.db`` is reported and left alone: the run goes on
without recording (``convergent state reset`` is not needed for it; remove the file).
Its mode is 0600 and its directory is the state directory (mode 0700): the summaries
have had every secret hidden, but what a host did is its owner's business. Writes use
WAL and ``synchronous=OFF`` (no fsync: a one-shot run pays ~2 ms of CPU for 1,000
events): a crash of the agent loses nothing written, a power loss may lose the last
events or, rarely, damage the file, which is then reported and can be removed.

Rows are plain tuples here (the state layer imports nothing of the engine's):
``(time, host, resource, outcome, seconds, summary, cause)``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Sequence

from convergent.state.db import StateError

__all__ = [
    "EVENTS_DB",
    "FLUSH",
    "MAX_AGE",
    "MAX_COUNT",
    "EventStore",
    "Row",
    "read_events",
]

EVENTS_DB = "events.db"
MAX_AGE = 7 * 86400.0  # seconds an event is kept by default
MAX_COUNT = 100_000  # events kept by default
FLUSH = 1.0  # seconds between writes of the buffered events (agent mode)

Row = tuple[float, str, str, str, float, str, str]

_COLUMNS = "time, host, resource, outcome, seconds, summary, cause"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, time REAL NOT NULL,"
    " host TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL,"
    " seconds REAL NOT NULL, summary TEXT NOT NULL, cause TEXT NOT NULL)",
)
# Rows are appended in time order, so the old ones have the lowest ids: the first young
# row's id bounds what is too old, found from the start without an index on time.
_PRUNE_AGE = (
    "DELETE FROM events WHERE id < coalesce("
    "(SELECT id FROM events WHERE time >= ? ORDER BY id LIMIT 1),"
    " (SELECT max(id) + 1 FROM events))"
)
_FILE_MODE = 0o600


class EventStore:
    """The writer of ``events.db`` in ``state_dir`` (the agent's, under its lock)."""

    def __init__(
        self, state_dir: str, *, max_age: float = MAX_AGE, max_count: int = MAX_COUNT
    ) -> None:
        self.path = os.path.join(state_dir, EVENTS_DB)
        self.max_age = max_age
        self.max_count = max_count
        self.pending: list[Row] = []
        self._conn: sqlite3.Connection | None = None

    def add(self, row: Row) -> None:
        """Buffer ``row`` (written by the next :meth:`flush`)."""
        self.pending.append(row)

    def flush(self, now: float) -> None:
        """Write the buffered rows and drop what is over the bounds (one transaction).

        Raises StateError (naming the file) when it cannot be written; the rows stay
        buffered then, up to ``max_count``.
        """
        rows = self.pending
        if not rows:
            return
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT INTO events ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
                conn.execute(_PRUNE_AGE, (now - self.max_age,))
                conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                    (self.max_count,),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            del rows[: max(0, len(rows) - self.max_count)]
            raise StateError(
                self.path, f"cannot record events: {exc}", what="event history"
            ) from exc
        self.pending = []

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            fd = os.open(
                self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, _FILE_MODE
            )
        except OSError as exc:
            raise StateError(
                self.path, f"cannot open: {exc.strerror or exc}", what="event history"
            ) from exc
        try:
            if os.fstat(fd).st_mode & 0o7777 != _FILE_MODE:
                os.fchmod(fd, _FILE_MODE)
        finally:
            os.close(fd)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=OFF")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn


def read_events(state_dir: str, since: float | None = None) -> list[Row]:
    """The stored events of ``state_dir`` (oldest first), from ``since`` (Unix seconds) on.

    Read only, beside a running agent. No file yet: no events. Raises StateError for a
    file that cannot be read.
    """
    path = os.path.join(state_dir, EVENTS_DB)
    if not os.path.isfile(path):
        return []
    from urllib.parse import quote

    try:
        conn = sqlite3.connect(
            "file://" + quote(os.fsencode(path)) + "?mode=ro", uri=True, timeout=10.0
        )
    except sqlite3.Error as exc:
        raise StateError(path, f"cannot open: {exc}", what="event history") from exc
    with contextlib.closing(conn):
        try:
            query = f"SELECT {_COLUMNS} FROM events"
            args: Sequence[float] = ()
            if since is not None:  # rows are in time order: from the first one as young
                query += " WHERE id >= coalesce((SELECT id FROM events WHERE time >= ?"
                query += " ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM events))"
                args = (since,)
            cursor: Iterable[Row] = conn.execute(query + " ORDER BY id", args)
            return list(cursor)
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                return []
            raise StateError(path, f"cannot read: {exc}", what="event history") from exc
