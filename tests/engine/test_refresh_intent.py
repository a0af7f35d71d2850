"""A refresh is written down before the change it stands for, and stays until handled.

The kill -9 tests with the real command are in tests/e2e/test_refresh_kill.py; these run
the engine in process against a real state database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent.engine import Blocked, Converged, Engine
from convergent.graph import Graph
from convergent.resources.base import Meta, Resource
from convergent.state import StateDB
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder, graph_of

UP, MID, DOWN = "probe[up]", "probe[mid]", "probe[down]"


def _notify_graph(up_box: Box, down_box: Box, meta: Meta | None = None) -> Graph[Resource[Any]]:
    g = graph_of(Probe.make("up", up_box, meta=meta), Probe.make("down", down_box))
    g.add_edge(UP, DOWN, notify=True)
    return g


def _converge(graph: Graph[Resource[Any]], state: StateDB) -> Recorder:
    rec = Recorder()

    async def main() -> None:
        engine = Engine(graph, reporter=rec, state=state, converged_timeout=0)
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    return rec


def _refreshes(box: Box) -> list[str]:
    return [line for line in box.journal if line.startswith("refresh")]


def test_the_refresh_is_durable_before_the_sender_applies(tmp_path: Path) -> None:
    up_box, down_box = Box(), Box(value="ok")
    up_box.gate = asyncio.Event()

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            engine = Engine(_notify_graph(up_box, down_box), state=state, converged_timeout=0)
            task = asyncio.create_task(engine.run())
            await asyncio.wait_for(up_box.entered.wait(), BOUND)
            # Inside apply, nothing changed yet: the intent is already on disk.
            assert state.pending_refreshes() == {DOWN: {UP}}
            assert up_box.gate is not None
            up_box.gate.set()
            await asyncio.wait_for(task, BOUND)
            assert state.pending_refreshes() == {}

    asyncio.run(main())
    assert _refreshes(down_box) == ["refresh down from probe[up]"]


def test_a_failed_apply_keeps_its_refresh_for_the_next_run(tmp_path: Path) -> None:
    """At least once: a failed apply may have changed part of the thing."""
    with StateDB(tmp_path / "state.db") as state:
        up_box, down_box = Box(fail_apply=True), Box(value="ok")
        rec = _converge(_notify_graph(up_box, down_box), state)
        assert [r.resource for r in rec.of(Blocked)] == [DOWN]  # type: ignore[union-attr]
        assert state.pending_refreshes() == {DOWN: {UP}}
        assert _refreshes(down_box) == []
        up_box.fail_apply = False
        _converge(_notify_graph(up_box, down_box), state)
        assert _refreshes(down_box) == ["refresh down from probe[up]"]
        assert state.pending_refreshes() == {}


def test_a_failed_apply_that_succeeds_on_retry_refreshes_once(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as state:
        up_box, down_box = Box(fail_times=1), Box(value="ok")
        graph = _notify_graph(up_box, down_box, meta=Meta(retry=1, delay=0))
        _converge(graph, state)
        assert _refreshes(down_box) == ["refresh down from probe[up]"]
        assert state.pending_refreshes() == {}


def test_a_refresh_that_did_nothing_takes_back_what_it_wrote_for_its_receivers(
    tmp_path: Path,
) -> None:
    """up -> mid -> down, both notify edges; mid's refresh does nothing (returns None), so
    down, notified only through mid, is not refreshed and no row is left behind."""
    up_box, mid_box, down_box = Box(), Box(value="ok"), Box(value="ok")
    mid_box.refresh_gate = asyncio.Event()
    graph = graph_of(
        Probe.make("up", up_box), Probe.make("mid", mid_box), Probe.make("down", down_box)
    )
    graph.add_edge(UP, MID, notify=True)
    graph.add_edge(MID, DOWN, notify=True)

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            engine = Engine(graph, state=state, converged_timeout=0)
            task = asyncio.create_task(engine.run())
            await asyncio.wait_for(mid_box.refreshing.wait(), BOUND)
            # mid's refresh may notify onward: written down before it runs.
            assert state.pending_refreshes() == {MID: {UP}, DOWN: {MID}}
            assert mid_box.refresh_gate is not None
            mid_box.refresh_gate.set()
            await asyncio.wait_for(task, BOUND)
            assert state.pending_refreshes() == {}

    asyncio.run(main())
    assert _refreshes(mid_box) == ["refresh mid from probe[up]"]
    assert _refreshes(down_box) == []


def test_a_change_while_the_receiver_refreshes_gets_a_refresh_of_its_own(
    tmp_path: Path,
) -> None:
    """The receiver is inside the refresh for up's first change when up changes again
    (its second apply held open while the receiver finishes): the row for the second
    change survives the receiver's clean-up, and the receiver refreshes again."""
    up_box, down_box = Box(), Box(value="ok")
    down_box.refresh_gate = asyncio.Event()

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            rec = Recorder()
            engine = Engine(_notify_graph(up_box, down_box), reporter=rec, state=state)
            task = asyncio.create_task(engine.run())
            await asyncio.wait_for(down_box.refreshing.wait(), BOUND)
            up_box.entered.clear()
            up_box.gate = asyncio.Event()
            up_box.value = "drifted"
            assert up_box.ctx is not None and down_box.refresh_gate is not None
            up_box.ctx.event()
            await asyncio.wait_for(up_box.entered.wait(), BOUND)  # up's second apply
            mark = len(rec.reports)
            down_box.refresh_gate.set()  # the receiver finishes the first refresh
            await asyncio.wait_for(down_box.refreshed.wait(), BOUND)
            assert state.pending_refreshes() == {DOWN: {UP}}  # up's apply is in flight
            up_box.gate.set()
            await rec.wait_for(lambda r: isinstance(r, Converged), start=mark)
            assert state.pending_refreshes() == {}
            engine.stop()
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert _refreshes(down_box) == ["refresh down from probe[up]"] * 2
