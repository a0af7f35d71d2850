"""The first passes of a large run start a batch at a time (``engine/pool.py``): the run
never holds a task per resource at once, every resource watches before any is checked,
and passes that wait (a long apply) still run side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convergent.engine.pool import BATCH
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource
from tests.engine.probe import Box, Gauge, Probe
from tests.engine.support import run_engine_virtual


class Counted(Probe, kind="counted_probe"):
    """Subscribes (as ``file`` does) and notes how many tasks exist when it is checked."""

    tasks: list[int]

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        self.box.note(f"ready {self.name}")
        ctx.ready()
        return lambda: None

    async def check(self, ctx: Context) -> Change | None:
        self.tasks.append(len(asyncio.all_tasks()))
        return await super().check(ctx)


def _graph(resources: list[Resource[Any]]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for r in resources:
        g.add(r)
    return g


def test_a_large_run_holds_a_few_batches_of_tasks_and_watches_all_before_any_check() -> None:
    box = Box(value="ok")
    tasks: list[int] = []
    probes: list[Resource[Any]] = []
    for i in range(8 * BATCH):
        probe = Counted.make(f"p{i}", box)
        assert isinstance(probe, Counted)
        probe.tasks = tasks
        probes.append(probe)
    result, _ = run_engine_virtual(_graph(probes))
    assert result.converged and len(tasks) == 8 * BATCH
    assert max(tasks) <= 3 * BATCH + 10, max(tasks)  # not one task per resource
    last_ready = max(i for i, line in enumerate(box.journal) if line.startswith("ready "))
    first_check = box.journal.index(next(x for x in box.journal if x.startswith("check ")))
    assert last_ready < first_check


def test_passes_that_wait_still_run_side_by_side() -> None:
    """More applies than a batch, each held open until all of them are in: none waits for
    a free place in the batch."""
    n = 2 * BATCH + 5
    gate = asyncio.Event()
    gauge = Gauge()
    boxes = [Box(gate=gate, gauges=[gauge]) for _ in range(n)]

    class Opener(Probe, kind="opener_probe"):
        async def apply(self, ctx: Context, change: Change) -> str | None:
            if gauge.now + 1 == n:
                gate.set()  # the last one in opens the gate for all
            return await super().apply(ctx, change)

    result, _ = run_engine_virtual(
        _graph([Opener.make(f"p{i}", box) for i, box in enumerate(boxes)])
    )
    assert result.converged
    assert gauge.peak == n
    assert all(box.value == "ok" for box in boxes)
