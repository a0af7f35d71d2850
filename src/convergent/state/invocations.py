"""The records of ``convergent invoke``, one row each in the state database.

A record says who ran it (uid and user name; ``sudo_user`` is what sudo said, a hint and
not a proof), when, on which host, which invocation of which policy with which methods
and switches (secret switches stored as ``<secret>``), whether it was a noop, and how it
ended: ``ok``, ``failed``, ``refused`` (a guard rail said no; ``reason`` says which) or
``running`` (the process died before it could say). The ``fingerprint`` (SHA-256 of the
policy file, the invocation, its methods, every switch value and the resources it would
run) is how ``require_noop_first`` finds the noop that stands for a real run; it is a
hash, so a secret switch is not in the database, not even through it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from convergent.state.db import StateDB

__all__ = ["Outcome", "Record", "history", "latest_noop", "save", "update"]

Outcome = Literal["running", "ok", "failed", "refused"]


class Record(msgspec.Struct, kw_only=True):
    """One invocation (see the module docstring)."""

    invocation: str
    policy: str
    host: str
    uid: int
    user: str
    sudo_user: str | None = None
    started: float
    finished: float | None = None
    methods: list[str]
    switches: dict[str, Any]
    fingerprint: str
    noop: bool
    outcome: Outcome = "running"
    reason: str = ""
    would_change: int = 0  # the dry run's resources that would change
    may_change: int = 0  # the dry run's resources after one that would change
    changed: int = 0
    failed: int = 0
    id: int = 0  # the row, once saved


def save(db: StateDB, record: Record) -> Record:
    """Store ``record`` (committed before returning); it gets its row id."""
    record.id = db.add_invocation(record.started, _encode(record))
    db.set_invocation(record.id, _encode(record))
    return record


def update(db: StateDB, record: Record, outcome: Outcome, reason: str = "", **counts: int) -> None:
    """Say how ``record`` ended (and its counts), committed before returning."""
    record.outcome = outcome
    record.reason = reason
    record.finished = time.time()
    for name, value in counts.items():
        setattr(record, name, value)
    db.set_invocation(record.id, _encode(record))


def history(db: StateDB, since: float = 0.0) -> list[Record]:
    """Every record started at ``since`` or later, oldest first."""
    decoder = msgspec.json.Decoder(Record)
    records = []
    for row, _, text in db.invocations(since):
        record = decoder.decode(text)
        record.id = row
        records.append(record)
    return records


def latest_noop(
    db: StateDB, fingerprint: str, within: float, now: float, asking: int = 0
) -> Record | None:
    """The noop that allows a real run of ``fingerprint`` now: one that ended ``ok`` less
    than ``within`` seconds ago, with no real run of the same fingerprint after it (each
    noop stands for one real run). ``asking``: the row of the run that asks (not counted).
    None when there is none."""
    found: Record | None = None
    for record in history(db, now - within):
        if record.fingerprint != fingerprint or record.id == asking:
            continue
        if record.noop and record.outcome == "ok":
            found = record
        elif not record.noop and record.outcome in ("ok", "failed", "running"):
            found = None  # that noop was used (or a run went ahead and died)
    return found


def _encode(record: Record) -> str:
    return msgspec.json.encode(record).decode()
