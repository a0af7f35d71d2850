"""Run a graph under ``--noop``, then for real from the same state, and compare what the
dry run predicted with what the real run did (through the Python API, in process); the
noop run must change nothing (:func:`snapshot` before and after it)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergent import File, Graph, Resource, arun
from convergent.engine.report import Changed, Failed, MayChange, Report, WouldChange

__all__ = ["Outcome", "noop_then_real", "run_once", "snapshot", "then_a_file"]

MakeGraph = Callable[[], Graph[Resource[Any]]]


@dataclass
class Outcome:
    """What a noop run said (``would``, ``may``: resource -> reason) and a real run did."""

    would: set[str] = field(default_factory=set)
    may: dict[str, str] = field(default_factory=dict)
    real: set[str] = field(default_factory=set)
    noop_reports: list[Report] = field(default_factory=list)
    real_reports: list[Report] = field(default_factory=list)


def _reported(outcome: Outcome, report: Report) -> None:
    outcome.noop_reports.append(report)
    if isinstance(report, WouldChange):
        change = report.change
        if change is not None and change.members:
            outcome.would.update(change.members)
        else:
            outcome.would.add(report.resource)
    elif isinstance(report, MayChange):
        outcome.may[report.resource] = report.reason


def _done(outcome: Outcome, report: Report) -> None:
    outcome.real_reports.append(report)
    if isinstance(report, Changed):
        members = report.change.members
        outcome.real.update(members if members else (report.resource,))


async def run_once(make: MakeGraph, state_dir: str, *, noop: bool = False) -> list[Report]:
    """One run of ``make()`` until converged; its reports. A failure fails the test."""
    reports: list[Report] = []
    await asyncio.wait_for(
        arun(make(), converged_timeout=0, noop=noop, reporter=reports.append, state_dir=state_dir),
        30,
    )
    failed = [r for r in reports if isinstance(r, Failed)]
    assert not failed, failed
    return reports


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under ``root`` a run could change: each entry's kind, mode, owner,
    inode, modification time and bytes (a link's target). Not SQLite's ``-wal``/``-shm``
    companions, which a reader of the state database makes (empty), nor so the times of
    directories: what they hold is compared entry by entry."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        if path.name.endswith(("-wal", "-shm")):
            continue
        st = path.lstat()
        if stat.S_ISREG(st.st_mode):
            body: Any = path.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(path)
        else:
            body = None
        mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
        found[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_ino, mtime, body)
    return found


async def noop_then_real(make: MakeGraph, state_dir: str) -> Outcome:
    """``--noop``, then the real run from the same state. The noop run must leave
    everything beside the state directory (the files, the state database) as it was."""
    outcome = Outcome()
    root = Path(state_dir).parent
    before = snapshot(root)
    for report in await run_once(make, state_dir, noop=True):
        _reported(outcome, report)
    after = snapshot(root)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert not changed, f"the noop run changed {changed}"
    for report in await run_once(make, state_dir):
        _done(outcome, report)
    return outcome


def then_a_file(first: Resource[Any], path: Path) -> MakeGraph:
    """A graph of ``first``, then a file at ``path`` (content ``on``) that requires it:
    what reads the host downstream of ``first``."""

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(first)
        g.add(File(str(path), content="on\n"), require=[first.id])
        return g

    return graph
