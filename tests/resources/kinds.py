"""Helpers for the tests of the file-editing kinds (line, cron, download): run one
resource's check/apply, or a graph through the real engine, every wait bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from convergent.engine import Converged, Engine, Failed, Report, RunResult
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource

__all__ = ["TIMEOUT", "Reports", "Shared", "apply", "check", "converge", "engine_run", "run"]

TIMEOUT = 10.0


class Shared:
    """``ctx.shared`` for tests: one instance per factory, like the engine's."""

    def __init__(self) -> None:
        self.items: dict[Any, Any] = {}

    def __call__(self, factory: Callable[[], Any]) -> Any:
        if factory not in self.items:
            self.items[factory] = factory()
        return self.items[factory]

    async def aclose(self) -> None:
        """As the engine does at the end of a run: ``aclose()`` awaited, else ``close()``."""
        items, self.items = list(self.items.values()), {}
        for item in items:
            aclose = getattr(item, "aclose", None)
            if aclose is not None:
                await aclose()
            elif (close := getattr(item, "close", None)) is not None:
                close()


def context(resource: Resource[Any], shared: Shared | None = None) -> Context:
    return Context(
        resource.id,
        ready=lambda: None,
        event=lambda: None,
        log=lambda message: None,
        shared=shared if shared is not None else Shared(),
    )


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _once(resource: Resource[Any], change: Change | None) -> Any:
    shared = Shared()
    try:
        ctx = context(resource, shared)
        if change is None:
            return await resource.check(ctx)
        return await resource.apply(ctx, change)
    finally:
        await shared.aclose()


def check(resource: Resource[Any]) -> Change | None:
    """``resource.check`` in a run of its own (its shared services closed at the end)."""
    return run(_once(resource, None))  # type: ignore[no-any-return]


def apply(resource: Resource[Any], change: Change) -> str | None:
    """``resource.apply`` in a run of its own."""
    return run(_once(resource, change))  # type: ignore[no-any-return]


def converge(resource: Resource[Any]) -> Change | None:
    """Check, apply what was found, and make sure a second check is clean."""
    change = check(resource)
    if change is not None:
        apply(resource, change)
    assert check(resource) is None
    return change


class Reports:
    """Collects engine reports; lets a test wait (bounded) for one that matches."""

    def __init__(self) -> None:
        self.items: list[Report] = []
        self._arrived = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.items.append(report)
        self._arrived.set()

    async def next(self, kind: type[Any], after: int, *, failures: bool = False) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for report in self.items[after:]:
                    if isinstance(report, Failed) and not failures:
                        raise AssertionError(f"unexpected failure: {report.error}")
                    if isinstance(report, kind):
                        return report
                self._arrived.clear()
                await self._arrived.wait()


def engine_run(
    graph: Graph[Resource[Any]],
    *,
    noop: bool = False,
    during: Callable[[Reports], Awaitable[None]] | None = None,
) -> tuple[RunResult, Reports]:
    """Run ``graph`` through the engine until converged (then ``during``, if given)."""
    reports = Reports()

    async def main() -> RunResult:
        if during is None:
            engine = Engine(graph, noop=noop, converged_timeout=0, reporter=reports)
            return await asyncio.wait_for(engine.run(), TIMEOUT)
        engine = Engine(graph, noop=noop, reporter=reports)
        task = asyncio.create_task(engine.run())
        try:
            await reports.next(Converged, 0)
            await during(reports)
        finally:
            engine.stop()
            result = await asyncio.wait_for(task, TIMEOUT)
        return result

    return run(main()), reports
