"""Running the real engine with a state database, for the tests of state-backed kinds."""

from __future__ import annotations

import asyncio
from typing import Any

from convergent.engine import Engine, Report, RunResult
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.state import StateDB

BOUND = 10.0  # seconds a run in these tests may take


def engine_with_state(graph: Graph[Resource[Any]], state: StateDB | None, **kwargs: Any) -> Engine:
    """An Engine whose resources get ``state`` as ``ctx.state``."""
    return Engine(graph, state=state, **kwargs)


def converge(
    graph: Graph[Resource[Any]], state: StateDB | None, *, noop: bool = False
) -> tuple[RunResult, list[Report]]:
    """Run ``graph`` through the real engine until it converges once; return every report."""
    reports: list[Report] = []

    async def main() -> RunResult:
        engine = engine_with_state(
            graph, state, noop=noop, converged_timeout=0, reporter=reports.append
        )
        return await asyncio.wait_for(engine.run(), BOUND)

    return asyncio.run(main()), reports


def graph_of(
    *resources: Resource[Any], notify: tuple[tuple[str, str], ...] = ()
) -> Graph[Resource[Any]]:
    """A graph of ``resources`` with a notify edge for each ``(sender, receiver)`` pair."""
    graph: Graph[Resource[Any]] = Graph()
    for res in resources:
        graph.add(res)
    for sender, receiver in notify:
        graph.add_edge(sender, receiver, notify=True)
    return graph
