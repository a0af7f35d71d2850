"""``timer``: ticks on a fixed grid and refreshes what it notifies, on a virtual clock.

The engine runs for real on ``tests.clock.run_virtual``'s loop, so an interval of 10 s
takes no real time and tick times can be asserted exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from convergent.engine import Changed, Log, Report, WouldChange
from convergent.errors import ParamError
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.resources.noop import Noop
from convergent.resources.timer import Timer
from tests.clock import run_virtual
from tests.state.support import engine_with_state, graph_of

BOUND = 1000.0  # virtual seconds any wait may take


class Timeline:
    """A reporter that stamps every report with the loop's (virtual) time."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, Report]] = []
        self._new = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.reports.append((asyncio.get_running_loop().time(), report))
        self._new.set()

    async def wait_until(self, predicate: Callable[[list[Report]], bool]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate([r for _, r in self.reports]):
                self._new.clear()
                await self._new.wait()

    def times(self, kind: type[Any], resource: str) -> list[float]:
        return [t for t, r in self.reports if isinstance(r, kind) and r.resource == resource]


def run_until(
    graph: Graph[Resource[Any]],
    predicate: Callable[[list[Report]], bool],
    *,
    noop: bool = False,
) -> Timeline:
    """Run the real engine on the virtual clock until ``predicate`` holds for the reports."""
    timeline = Timeline()

    async def main() -> None:
        engine = engine_with_state(graph, None, noop=noop, reporter=timeline)
        run = asyncio.create_task(engine.run())
        try:
            await timeline.wait_until(predicate)
        finally:
            engine.stop()
            result = await asyncio.wait_for(run, BOUND)
        assert result.failed == 0

    run_virtual(main())
    return timeline


def count(kind: type[Any], resource: str, n: int) -> Callable[[list[Report]], bool]:
    def predicate(reports: list[Report]) -> bool:
        return sum(isinstance(r, kind) and r.resource == resource for r in reports) >= n

    return predicate


def test_timer_ticks_every_interval_and_refreshes_downstream_each_time() -> None:
    timer = Timer("t", interval=10)
    graph = graph_of(timer, Noop("n"), notify=(("timer[t]", "noop[n]"),))
    timeline = run_until(graph, count(Log, "noop[n]", 3))
    assert timeline.times(Changed, "timer[t]") == [10.0, 20.0, 30.0]
    ticks = [r.summary for _, r in timeline.reports if isinstance(r, Changed)]
    assert ticks == ["tick 1", "tick 2", "tick 3"]
    notified = [(t, r) for t, r in timeline.reports if isinstance(r, Log)]
    assert notified == [(t, Log("noop[n]", "notified by timer[t]")) for t in (10.0, 20.0, 30.0)]
    assert timer.outputs() == {"ticks": 3}


def test_timer_does_not_tick_at_start() -> None:
    timer = Timer("t", interval=2.5)
    timeline = run_until(graph_of(timer), count(Changed, "timer[t]", 1))
    assert timeline.times(Changed, "timer[t]") == [2.5]


def test_timer_under_noop_reports_ticks_and_refreshes_nothing() -> None:
    graph = graph_of(Timer("t", interval=10), Noop("n"), notify=(("timer[t]", "noop[n]"),))
    timeline = run_until(graph, count(WouldChange, "timer[t]", 2), noop=True)
    previews = [r for _, r in timeline.reports if isinstance(r, WouldChange)]
    assert [(p.change and p.change.summary, p.refreshes) for p in previews] == [
        ("tick", ("noop[n]",)),
        ("tick", ("noop[n]",)),
    ]
    assert timeline.times(WouldChange, "timer[t]") == [10.0, 20.0]
    assert not [r for _, r in timeline.reports if isinstance(r, Changed | Log)]


@pytest.mark.parametrize("interval", [0, -1, 1e-300, 0.0009, float("inf"), float("nan")])
def test_timer_rejects_an_interval_under_a_millisecond_or_not_finite(interval: float) -> None:
    with pytest.raises(ParamError) as info:
        Timer("t", interval=interval)
    assert info.value.field == "interval"
