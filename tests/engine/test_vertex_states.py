"""The vertex-state stream (``Engine.follow_states``): an observer in the process sees
each vertex go through its states as the engine runs it, and a run nobody follows makes
no record at all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import convergent.engine.follow as follow
from convergent.engine import Converged, Engine, VertexState
from convergent.engine.report import VERTEX_STATES
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder, graph_of


class Follower:
    """Keeps every VertexState and lets a test wait for one."""

    def __init__(self) -> None:
        self.records: list[VertexState] = []
        self._changed = asyncio.Event()

    def __call__(self, record: VertexState) -> None:
        self.records.append(record)
        self._changed.set()

    def of(self, vid: str) -> list[str]:
        return [r.state for r in self.records if r.resource == vid]

    async def wait_for(self, vid: str, state: str) -> None:
        async with asyncio.timeout(BOUND):
            while state not in self.of(vid):
                self._changed.clear()
                await self._changed.wait()


def _subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(state in it for state in wanted)


def test_a_follower_sees_checking_applying_then_converged() -> None:
    box = Box()
    a, b = Probe.make("a", box, want="a"), Probe.make("b", box, want="a")

    async def main() -> Follower:
        follower = Follower()
        engine = Engine(graph_of(a, b, edges=(("a", "b"),)), converged_timeout=0)
        engine.follow_states(follower)
        async with asyncio.timeout(BOUND):
            result = await engine.run()
        assert result.converged
        assert engine.vertex_states() == {"probe[a]": "converged", "probe[b]": "converged"}
        return follower

    follower = asyncio.run(main())
    # a changed something; b was already right (the box holds "a" once a is applied).
    assert _subsequence(["checking", "applying", "converged"], follower.of("probe[a]"))
    assert "applying" not in follower.of("probe[b]")
    assert _subsequence(["checking", "converged"], follower.of("probe[b]"))
    assert {r.state for r in follower.records} <= set(VERTEX_STATES)


def test_the_snapshot_says_applying_while_an_apply_runs() -> None:
    box = Box()
    box.gate = asyncio.Event()
    probe = Probe.make("p", box)

    async def main() -> None:
        follower = Follower()
        engine = Engine(graph_of(probe), converged_timeout=0)
        engine.follow_states(follower)
        task = asyncio.create_task(engine.run())
        await follower.wait_for("probe[p]", "applying")
        assert engine.vertex_states() == {"probe[p]": "applying"}
        assert box.gate is not None
        box.gate.set()
        async with asyncio.timeout(BOUND):
            await task
        assert follower.of("probe[p]")[-1] == "converged"

    asyncio.run(main())


def test_a_failure_and_what_it_blocks_are_followed() -> None:
    box = Box(fail_apply=True)
    a, b = Probe.make("a", box), Probe.make("b", Box())

    async def main() -> Follower:
        follower = Follower()
        engine = Engine(graph_of(a, b, edges=(("a", "b"),)), converged_timeout=0)
        engine.follow_states(follower)
        async with asyncio.timeout(BOUND):
            await engine.run()
        assert engine.vertex_states() == {"probe[a]": "failed", "probe[b]": "blocked"}
        return follower

    follower = asyncio.run(main())
    assert follower.of("probe[a]")[-1] == "failed"
    assert follower.of("probe[b]") == ["blocked"]


def test_a_new_graph_tells_what_was_removed_and_what_came() -> None:
    box = Box()
    a, b = Probe.make("a", box), Probe.make("b", box)
    c = Probe.make("c", box)

    async def main() -> Follower:
        follower = Follower()
        rec = Recorder()
        engine = Engine(graph_of(a, b), reporter=rec)
        engine.follow_states(follower)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        a2 = Probe.make("a", box)
        async with asyncio.timeout(BOUND):
            await engine.swap(graph_of(a2, c))
        await follower.wait_for("probe[c]", "converged")
        assert set(engine.vertex_states()) == {"probe[a]", "probe[c]"}
        engine.stop()
        async with asyncio.timeout(BOUND):
            await task
        return follower

    follower = asyncio.run(main())
    assert follower.of("probe[b]")[-1] == "removed"
    assert follower.of("probe[c]")[0] == "waiting"
    assert "removed" not in follower.of("probe[a]")  # unchanged: it kept its worker


def test_a_listener_that_raises_does_not_stop_the_run() -> None:
    def broken(record: VertexState) -> None:
        raise ValueError("observer bug")

    async def main() -> None:
        follower = Follower()
        engine = Engine(graph_of(Probe.make("p", Box())), converged_timeout=0)
        engine.follow_states(broken)
        engine.follow_states(follower)
        async with asyncio.timeout(BOUND):
            result = await engine.run()
        assert result.converged
        assert follower.of("probe[p]")[-1] == "converged"

    asyncio.run(main())


def test_a_run_nobody_follows_makes_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    def counting(*args: Any) -> VertexState:
        made.append(args)
        return VertexState(*args)

    monkeypatch.setattr(follow, "VertexState", counting)

    async def main() -> None:
        follower = Follower()
        engine = Engine(graph_of(Probe.make("p", Box())), converged_timeout=0)
        unfollow = engine.follow_states(follower)
        unfollow()
        assert not engine.observe().listeners
        async with asyncio.timeout(BOUND):
            result = await engine.run()
        assert result.converged
        assert engine.vertex_states() == {"probe[p]": "converged"}  # asked for, it answers

    asyncio.run(main())
    assert made == []
