"""Run a graph under ``--noop``, then for real from the same state, and compare what the
dry run predicted with what the real run did (through the Python API, in process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convergent import Graph, Resource, arun
from convergent.engine.report import Changed, Failed, MayChange, Report, WouldChange

__all__ = ["Outcome", "noop_then_real", "run_once"]

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


async def noop_then_real(make: MakeGraph, state_dir: str) -> Outcome:
    """``--noop``, then the real run from the same state."""
    outcome = Outcome()
    for report in await run_once(make, state_dir, noop=True):
        _reported(outcome, report)
    for report in await run_once(make, state_dir):
        _done(outcome, report)
    return outcome
