"""``noop``: changes nothing, and logs who notified it."""

from __future__ import annotations

import asyncio
from typing import Any

from convergent.engine import Changed, Engine, Log, Report, RunResult, WouldChange
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.resources.exec import Exec
from convergent.resources.noop import Noop

BOUND = 10.0  # seconds a run in these tests may take


def converge(graph: Graph[Resource[Any]], *, noop: bool = False) -> tuple[RunResult, list[Report]]:
    reports: list[Report] = []

    async def main() -> RunResult:
        engine = Engine(graph, noop=noop, converged_timeout=0, reporter=reports.append)
        return await asyncio.wait_for(engine.run(), BOUND)

    return asyncio.run(main()), reports


def test_noop_logs_who_notified_it() -> None:
    g: Graph[Resource[Any]] = Graph()
    done = g.add(Noop("done"))
    g.add(Exec("x", cmd=["true"]), notify=[done])
    result, reports = converge(g)
    assert result.exit_code == 0
    assert Log("noop[done]", "notified by exec[x]") in reports


def test_noop_logs_every_upstream_that_notified_it_in_one_line() -> None:
    g: Graph[Resource[Any]] = Graph()
    done = g.add(Noop("done"))
    g.add(Exec("b", cmd=["true"]), notify=[done])
    g.add(Exec("a", cmd=["true"]), notify=[done])
    _, reports = converge(g)
    done_logs = [r.message for r in reports if isinstance(r, Log) and r.resource == "noop[done]"]
    assert done_logs == ["notified by exec[a], exec[b]"]


def test_noop_without_a_notification_logs_nothing_and_changes_nothing() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("alone"))
    result, reports = converge(g)
    assert result.converged and result.exit_code == 0 and result.changed == 0
    assert not [r for r in reports if isinstance(r, Log | Changed | WouldChange)]


def test_noop_is_not_notified_when_upstream_changed_nothing() -> None:
    g: Graph[Resource[Any]] = Graph()
    done = g.add(Noop("done"))
    g.add(Exec("x", cmd=["true"], onlyif=["false"]), notify=[done])
    result, reports = converge(g)
    assert result.changed == 0
    assert not [r for r in reports if isinstance(r, Log)]
