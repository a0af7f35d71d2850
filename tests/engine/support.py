"""Helpers shared by the engine tests: a recording reporter and graphs of probes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convergent.engine import Engine, Log, Report, RunResult
from convergent.graph import Graph
from convergent.resources.base import Resource
from tests.clock import run_virtual

__all__ = ["BOUND", "Recorder", "graph_of", "logs", "run_engine_virtual"]

BOUND = 5.0  # seconds any single wait in these tests may take (real time)


class Recorder:
    """A reporter that keeps every report and lets a test wait for one."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._changed = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.reports.append(report)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[Report], bool], start: int = 0, bound: float = BOUND
    ) -> Report:
        async with asyncio.timeout(bound):
            while True:
                for report in self.reports[start:]:
                    if predicate(report):
                        return report
                self._changed.clear()
                await self._changed.wait()

    def of(self, kind: type) -> list[Report]:
        return [r for r in self.reports if isinstance(r, kind)]


def graph_of(
    *probes: Resource[Any], edges: tuple[tuple[str, str], ...] = (), kind: str = "probe"
) -> Graph[Resource[Any]]:
    """A graph of ``probes``; ``edges`` name them (``kind[NAME]`` for each name)."""
    g: Graph[Resource[Any]] = Graph()
    for p in probes:
        g.add(p)
    for src, dst in edges:
        g.add_edge(f"{kind}[{src}]", f"{kind}[{dst}]")
    return g


def logs(rec: Recorder, resource: str) -> list[str]:
    """The Log messages reported for ``resource``, in order."""
    return [r.message for r in rec.of(Log) if r.resource == resource]  # type: ignore[union-attr]


def run_engine_virtual(
    graph: Graph[Resource[Any]], bound: float = 1000.0, **kwargs: Any
) -> tuple[RunResult, Recorder]:
    """Run ``graph`` to the end (``converged_timeout=0`` unless given) on the virtual clock.

    ``bound`` is in virtual seconds: a run that does not end by then fails the test.
    """
    rec = Recorder()
    kwargs.setdefault("converged_timeout", 0)

    async def main() -> RunResult:
        engine = Engine(graph, reporter=rec, **kwargs)
        async with asyncio.timeout(bound):
            return await engine.run()

    return run_virtual(main()), rec
