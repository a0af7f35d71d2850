"""The way out of a damaged state database: check it, restore the backup, or start afresh.

These are what ``convergent state check | restore | reset`` do. ``check`` only reads
(it runs beside an agent). ``restore`` and ``reset`` take both locks of the directory
exclusively, so they are refused while an agent runs or a reader reads, and write in an
order that a kill at any point leaves recoverable: the damaged file is moved aside (never
deleted by ``restore``), the new one is written to a 0600 temp file, fsynced and renamed
into place, and the marker stays, so a half-done attempt is refused at the next start
and can be run again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from convergent.state.db import STATE_DB, StateDamaged, StateDB, StateError, _fsync_dir
from convergent.state.statedir import (
    AGENT_THERE,
    BACKUP,
    LOCK,
    MARKER,
    READERS_LOCK,
    READERS_THERE,
    _durable_file,
    _open_db,
    _os_error,
    _refuse_others,
    _refuse_unsafe_parents,
    _write_marker,
    _write_pid,
    lock,
    open_state_dir,
)

__all__ = [
    "DAMAGED",
    "Health",
    "amount",
    "check_state_dir",
    "held",
    "reset_state_dir",
    "restore_state_dir",
]

DAMAGED = STATE_DB + ".damaged"  # where restore moves a damaged database
_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass
class Health:
    """What ``convergent state check`` found: ``ok`` and one line per file."""

    ok: bool = True
    lines: list[str] = field(default_factory=list)


def check_state_dir(path: str) -> Health:
    """Check the database and its backup without changing anything (beside an agent too)."""
    path = os.path.abspath(path)
    health = Health()
    file = os.path.join(path, STATE_DB)
    if not os.path.isdir(path):
        health.lines.append(f"{path}: no state directory yet (an agent creates it at its start)")
        return health
    try:
        with open_state_dir(path, mode="shared") as opened:
            if opened.db is None:
                health.lines.append(f"{file}: no database yet (an agent creates it at its start)")
            else:
                health.lines.append(f"{file}: ok ({_summary(opened.db)})")
    except StateDamaged as exc:
        health.ok = False
        health.lines.append(f"{file}: {exc.problem}")
    backup = os.path.join(path, BACKUP)
    if os.path.exists(backup):
        health.lines.append(f"{backup}: {_backup_health(backup)}")
    else:
        health.lines.append(f"{backup}: none (an agent makes one at each start)")
    return health


def restore_state_dir(path: str, *, force: bool = False) -> str:
    """Put the backup in place of the database; return what was done.

    A database that is not damaged is kept unless ``force``: restoring it would lose what
    changed since the backup was taken. A damaged one is moved to ``state.db.damaged``.
    """
    path = os.path.abspath(path)
    file, backup = os.path.join(path, STATE_DB), os.path.join(path, BACKUP)
    with _upkeep(path):
        if not os.path.exists(backup):
            raise StateError(
                backup,
                "does not exist: there is no backup to restore (an agent makes one at each "
                f"start); start afresh instead: convergent state reset --yes --state-dir {path}",
            )
        problem = _backup_problem(backup)
        if problem is not None:
            raise StateError(backup, f"cannot be restored: {problem}")
        if not force and _sound(path):
            raise StateError(
                file,
                f"is not damaged; restoring would lose what changed since the backup was taken "
                f"({_taken(backup)}); add --yes to restore anyway",
            )
        moved = _move_aside(path)
        _durable_file(path, STATE_DB, lambda tmp: _copy(backup, tmp))
        _write_marker(path)
    said = f"{file}: restored from {backup} (taken {_taken(backup)})"
    if moved:
        said += f"; the damaged database was moved to {os.path.join(path, DAMAGED)}"
    return said


def reset_state_dir(path: str) -> dict[str, int] | None:
    """Start afresh with an empty database; return what the old one held (None: unreadable).

    The backup is kept: ``restore`` can still bring the old database back until the next
    agent starts (which replaces the backup).
    """
    path = os.path.abspath(path)
    file = os.path.join(path, STATE_DB)
    with _upkeep(path):
        lost = held(path)
        try:
            for name in (STATE_DB, *(STATE_DB + suffix for suffix in _COMPANIONS)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, name))
            _fsync_dir(path)
        except OSError as exc:
            raise _os_error(file, "cannot remove", exc) from exc
        with StateDB(file) as db:
            db.checkpoint()
        _write_marker(path)
    return lost


def held(path: str) -> dict[str, int] | None:
    """What the database in ``path`` holds: rows per kind of record ({}: there is no
    database; None: it cannot be read)."""
    try:
        db = _open_db(os.path.abspath(path), writable=False)
    except StateError:
        return None
    if db is None:
        return {}
    with db:
        return db.counts()


# -- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _upkeep(path: str) -> Iterator[None]:
    """Hold both locks exclusively: no agent runs and no reader reads meanwhile."""
    if not os.path.isdir(path):
        raise StateError(path, "is not a state directory (it does not exist)")
    _refuse_unsafe_parents(path)  # it copies secrets: the agent's rules for the directory
    _refuse_others(path)
    fds = [lock(path, LOCK, exclusive=True, writer=True, fix=AGENT_THERE)]
    try:
        _write_pid(path, fds[0])
        fds.append(lock(path, READERS_LOCK, exclusive=True, writer=True, fix=READERS_THERE))
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fds[0], 0)
        for fd in fds:
            os.close(fd)


_ONE = {
    "secrets": "secret",
    "pending refreshes": "pending refresh",
    "key/values": "key/value",
    "reversal records": "reversal record",
}


def amount(n: int, what: str) -> str:
    """``1 secret``, ``2 secrets``: ``what`` is a key of ``StateDB.counts()``."""
    return f"{n} {_ONE.get(what, what) if n == 1 else what}"


def _summary(db: StateDB) -> str:
    counts = ", ".join(amount(n, what) for what, n in db.counts().items())
    return f"schema {db.version}; {counts}"


def _backup_problem(backup: str) -> str | None:
    try:
        with StateDB(backup, readonly=True) as db:
            return db.quick_check()
    except StateDamaged as exc:
        return exc.problem
    except StateError as exc:
        return exc.message


def _backup_health(backup: str) -> str:
    problem = _backup_problem(backup)
    if problem is not None:
        return f"damaged: {problem}"
    with StateDB(backup, readonly=True) as db:
        return f"ok, taken {_taken(backup)} ({_summary(db)})"


def _taken(backup: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(os.stat(backup).st_mtime))


def _sound(path: str) -> bool:
    """Whether the directory's database opens and passes its check."""
    try:
        db = _open_db(path, writable=False)
    except StateError:
        return False
    if db is None:
        return not os.path.lexists(os.path.join(path, MARKER))
    db.close()
    return True


def _move_aside(path: str) -> bool:
    """Move the database (and its WAL) to ``state.db.damaged``; False: there was none."""
    file = os.path.join(path, STATE_DB)
    try:
        for suffix in ("-wal", "-journal"):  # of an earlier damaged file: not this one's
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, DAMAGED + suffix))
        for suffix in ("-wal", "-journal"):
            if os.path.lexists(file + suffix):
                os.replace(file + suffix, os.path.join(path, DAMAGED + suffix))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file + "-shm")
        if not os.path.lexists(file):
            return False
        os.replace(file, os.path.join(path, DAMAGED))
    except OSError as exc:
        raise _os_error(file, "cannot move the damaged database aside", exc) from exc
    _fsync_dir(path)
    return True


def _copy(source: str, target: str) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
