"""Pending refreshes are kept per resource, not per vertex: a group's identity may not
exist after a restart or a regroup, its members' identities do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent.engine import Engine
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.state import StateDB
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder


class Pooled(Probe, kind="pooled"):
    """A probe that autogroups with its own kind."""

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, Pooled)


def _pooled(name: str, box: Box) -> Pooled:
    pooled = Pooled(name)
    pooled.box = box
    return pooled


def _run(graph: Graph[Resource[Any]], state: StateDB) -> Engine:
    engine = Engine(graph, reporter=Recorder(), state=state, converged_timeout=0)

    async def main() -> None:
        await asyncio.wait_for(engine.run(), BOUND)

    asyncio.run(main())
    return engine


def test_refreshes_for_a_group_are_written_per_member(tmp_path: Path) -> None:
    up, a, b = Box(), Box(value="ok"), Box(value="ok")
    a.refresh_gate = asyncio.Event()
    g: Graph[Resource[Any]] = Graph()
    g.add(Probe.make("up", up), notify=["pooled[a]", "pooled[b]"])
    g.add(_pooled("a", a))
    g.add(_pooled("b", b))

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            engine = Engine(g, reporter=Recorder(), state=state, converged_timeout=0)
            assert "autogroup[pooled:a,b]" in engine.graph
            task = asyncio.create_task(engine.run())
            await asyncio.wait_for(a.refreshing.wait(), BOUND)
            assert state.pending_refreshes() == {
                "pooled[a]": {"probe[up]"},
                "pooled[b]": {"probe[up]"},
            }
            assert a.refresh_gate is not None
            a.refresh_gate.set()
            await asyncio.wait_for(task, BOUND)
            assert state.pending_refreshes() == {}

    asyncio.run(main())
    assert "refresh b from probe[up]" in b.journal


def test_refreshes_from_a_group_are_written_per_member(tmp_path: Path) -> None:
    a, b, down = Box(), Box(), Box(value="ok")
    down.refresh_gate = asyncio.Event()
    g: Graph[Resource[Any]] = Graph()
    g.add(_pooled("a", a), notify=["probe[down]"])
    g.add(_pooled("b", b), notify=["probe[down]"])
    g.add(Probe.make("down", down))

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            task = asyncio.create_task(
                Engine(g, reporter=Recorder(), state=state, converged_timeout=0).run()
            )
            await asyncio.wait_for(down.refreshing.wait(), BOUND)
            assert state.pending_refreshes() == {"probe[down]": {"pooled[a]", "pooled[b]"}}
            assert down.refresh_gate is not None
            down.refresh_gate.set()
            await asyncio.wait_for(task, BOUND)
            assert state.pending_refreshes() == {}

    asyncio.run(main())


def test_a_refresh_saved_for_a_member_reaches_it_inside_a_group(tmp_path: Path) -> None:
    """Saved while pooled[a] was alone (or in another group): delivered to it in a group."""
    up, a, b = Box(value="ok"), Box(value="ok"), Box(value="ok")
    g: Graph[Resource[Any]] = Graph()
    g.add(Probe.make("up", up), notify=["pooled[a]", "pooled[b]"])
    g.add(_pooled("a", a))
    g.add(_pooled("b", b))
    with StateDB(tmp_path / "state.db") as state:
        state.add_refreshes("probe[up]", ["pooled[a]"])
        _run(g, state)
        assert state.pending_refreshes() == {}
    assert a.journal.count("refresh a from probe[up]") == 1
    # (A group refreshes the members its refreshing senders notify: pooled[b] too.)


def test_a_refresh_saved_by_a_grouped_sender_reaches_a_receiver_after_a_regroup(
    tmp_path: Path,
) -> None:
    """pooled[a] sent it from a group; now pooled[a] is alone (pooled[b] is gone)."""
    a, down = Box(value="ok"), Box(value="ok")
    g: Graph[Resource[Any]] = Graph()
    g.add(_pooled("a", a), notify=["probe[down]"])
    g.add(Probe.make("down", down))
    with StateDB(tmp_path / "state.db") as state:
        state.add_refreshes("pooled[a]", ["probe[down]"])
        state.add_refreshes("pooled[b]", ["probe[down]"])
        _run(g, state)
        assert state.pending_refreshes() == {}
    assert down.journal.count("refresh down from pooled[a],pooled[b]") == 1
