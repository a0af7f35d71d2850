"""The live graph changeover (``Engine.swap``): a new graph is applied as a diff while the
engine runs. Unchanged vertices keep their worker and watch and are not checked again;
changed ones restart; new ones start; removed ones stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Engine
from convergent.errors import CycleError, GraphError
from convergent.graph import Graph
from convergent.resources.base import Context, Meta, Resource
from tests.clock import run_virtual
from tests.engine.probe import Box, Probe
from tests.engine.support import BOUND, Recorder


class Watched(Probe, kind="watched"):
    """A probe that notes when its watch ends (cancelled by the engine)."""

    async def watch(self, ctx: Context) -> None:
        try:
            await super().watch(ctx)
        finally:
            self.box.note(f"watch stopped {self.name}")


class Grouped(Probe, kind="grouped"):
    """A probe that autogroups with its own kind."""

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, Grouped)


def _graph(*resources: Resource[Any], edges: tuple[tuple[str, str], ...] = ()) -> Graph[Any]:
    g: Graph[Resource[Any]] = Graph()
    for resource in resources:
        g.add(resource)
    for source, target in edges:
        g.add_edge(source, target)
    return g


def _make(cls: type[Probe], name: str, box: Box, want: str = "ok", **meta: Any) -> Probe:
    probe = cls(name, meta=Meta(**meta) if meta else None, want=want)
    probe.box = box
    return probe


class Running:
    """An engine running in a task, with its reports."""

    def __init__(self, graph: Graph[Any], **kwargs: Any) -> None:
        self.rec = Recorder()
        self.engine = Engine(graph, reporter=self.rec, **kwargs)
        self.task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.engine.run())
        await self.rec.wait_for(lambda r: isinstance(r, Converged))

    async def swap(self, graph: Graph[Any]) -> Any:
        mark = len(self.rec.reports)
        done = await asyncio.wait_for(self.engine.swap(graph), BOUND)
        await self.rec.wait_for(lambda r: isinstance(r, Converged), mark)
        return done

    async def stop(self) -> None:
        self.engine.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, BOUND)


def test_unchanged_vertices_keep_running_and_are_not_checked_again() -> None:
    a, b, c = Box(), Box(), Box()

    async def main() -> None:
        run = Running(
            _graph(_make(Probe, "a", a), _make(Probe, "b", b), edges=(("probe[a]", "probe[b]"),))
        )
        await run.start()
        first_a = run.engine.graph["probe[a]"]
        again = _graph(
            _make(Probe, "a", Box()),
            _make(Probe, "b", Box()),
            _make(Probe, "c", c),
            edges=(("probe[a]", "probe[b]"),),
        )
        done = await run.swap(again)
        assert done.added == ["probe[c]"] and not done.removed and not done.changed
        assert run.engine.graph["probe[a]"] is first_a  # the running resource stays
        await run.stop()

    asyncio.run(main())
    for box, name in ((a, "a"), (b, "b")):
        assert box.journal.count(f"check {name}") == 1
        assert box.journal.count(f"ready {name}") == 1  # the watch was not restarted
    assert c.journal.count("check c") == 1


def test_a_changed_vertex_restarts_with_the_new_resource_and_is_checked() -> None:
    old, new, other = Box(), Box(), Box()

    async def main() -> None:
        run = Running(_graph(_make(Watched, "x", old), _make(Probe, "y", other)))
        await run.start()
        done = await run.swap(_graph(_make(Watched, "x", new, want="v2"), _make(Probe, "y", Box())))
        assert done.changed == ["watched[x]"] and done.text() == "+0 -0 ~1 resources"
        await run.stop()

    asyncio.run(main())
    assert "watch stopped x" in old.journal  # the old worker's watch was cancelled
    assert old.journal.count("check x") == 1
    assert new.journal[:2] == ["ready x", "check x"]
    assert new.value == "v2"
    assert other.journal.count("check y") == 1


def test_a_changed_meta_is_a_change() -> None:
    old, new = Box(), Box()

    async def main() -> None:
        run = Running(_graph(_make(Probe, "x", old)))
        await run.start()
        done = await run.swap(_graph(_make(Probe, "x", new, retry=2)))
        assert done.changed == ["probe[x]"]
        await run.stop()

    asyncio.run(main())
    assert new.journal.count("check x") == 1


def test_a_removed_vertex_stops_and_its_dependents_go_on() -> None:
    gone, rest = Box(), Box()

    async def main() -> None:
        run = Running(
            _graph(_make(Watched, "gone", gone), _make(Probe, "rest", rest)),
        )
        await run.start()
        done = await run.swap(_graph(_make(Probe, "rest", Box())))
        assert done.removed == ["watched[gone]"] and done.text() == "+0 -1 ~0 resources"
        assert "watched[gone]" not in run.engine.graph
        rest.value = "drift"
        assert rest.ctx is not None
        mark = len(run.rec.reports)
        rest.ctx.event()
        await run.rec.wait_for(lambda r: isinstance(r, Changed), mark)
        await run.stop()

    asyncio.run(main())
    assert gone.journal[-1] == "watch stopped gone"
    assert rest.value == "ok"


def test_a_vertex_whose_upstream_changed_is_checked_again() -> None:
    a, b, c = Box(), Box(), Box()

    async def main() -> None:
        run = Running(_graph(_make(Probe, "a", a), _make(Probe, "b", b), _make(Probe, "c", c)))
        await run.start()
        await run.swap(
            _graph(
                _make(Probe, "a", Box()),
                _make(Probe, "b", Box()),
                _make(Probe, "c", Box()),
                edges=(("probe[a]", "probe[b]"),),
            )
        )
        await run.stop()

    asyncio.run(main())
    assert a.journal.count("check a") == 1
    assert b.journal.count("check b") == 2
    assert c.journal.count("check c") == 1


def test_a_graph_the_engine_cannot_run_is_refused_and_the_running_one_goes_on() -> None:
    a = Box()

    async def main() -> None:
        run = Running(_graph(_make(Probe, "a", a)))
        await run.start()
        cyclic = _graph(
            _make(Probe, "a", Box(), want="new"),
            _make(Probe, "b", Box()),
            edges=(("probe[a]", "probe[b]"), ("probe[b]", "probe[a]")),
        )
        with pytest.raises(CycleError):
            await run.engine.swap(cyclic)
        two_sizes = _graph(
            _make(Probe, "a", Box(), sema=["s:1"]), _make(Probe, "b", Box(), sema=["s:2"])
        )
        with pytest.raises(GraphError, match="semaphore 's'"):
            await run.engine.swap(two_sizes)
        assert list(run.engine.graph) == ["probe[a]"]
        a.value = "drift"
        assert a.ctx is not None
        mark = len(run.rec.reports)
        a.ctx.event()
        await run.rec.wait_for(lambda r: isinstance(r, Changed), mark)
        await run.stop()

    asyncio.run(main())
    assert a.value == "ok"


def test_swap_needs_a_running_engine() -> None:
    async def main() -> None:
        engine = Engine(_graph(_make(Probe, "a", Box())))
        with pytest.raises(RuntimeError, match="running engine"):
            await engine.swap(_graph())

    asyncio.run(main())


def test_converged_timeout_counts_from_the_convergence_after_a_swap() -> None:
    """Virtual clock: converged at 0, a swap at 5 whose new vertex applies for 3 s; with
    converged_timeout=10 the run ends at 18, not at 10."""
    slow = Box(apply_seconds=3.0)

    async def main() -> tuple[float, Any]:
        loop = asyncio.get_running_loop()
        run = Running(_graph(_make(Probe, "a", Box())), converged_timeout=10)
        await run.start()
        await asyncio.sleep(5)
        await asyncio.wait_for(
            run.engine.swap(_graph(_make(Probe, "a", Box()), _make(Probe, "slow", slow))), 1
        )
        assert run.task is not None
        result = await asyncio.wait_for(run.task, 100)
        return loop.time(), result

    end, result = run_virtual(main())
    assert slow.at("applied slow") == [8.0]
    assert end == pytest.approx(18.0)
    assert result.converged and result.exit_code == 0 and result.resources == 2


def test_unchanged_members_keep_their_group_and_are_not_checked_again() -> None:
    a, b, c = Box(), Box(), Box()
    group = "autogroup[grouped:a,b]"

    async def main() -> None:
        run = Running(_graph(_make(Grouped, "a", a), _make(Grouped, "b", b)))
        await run.start()
        assert list(run.engine.graph) == [group]
        worker = run.engine._workers[group]
        done = await run.swap(
            _graph(_make(Grouped, "a", Box()), _make(Grouped, "b", Box()), _make(Grouped, "c", c))
        )
        assert done.added == ["grouped[c]"]
        # Without stickiness c would have joined a and b, and their group restarted.
        assert sorted(run.engine.graph) == [group, "grouped[c]"]
        assert run.engine._workers[group] is worker
        await run.stop()

    asyncio.run(main())
    assert a.journal.count("check a") == 1
    assert b.journal.count("check b") == 1
    assert c.journal.count("check c") == 1


def test_a_changed_member_regroups_its_group_and_the_others_follow() -> None:
    b_new = Box()

    async def main() -> None:
        run = Running(_graph(_make(Grouped, "a", Box()), _make(Grouped, "b", Box())))
        await run.start()
        done = await run.swap(
            _graph(_make(Grouped, "a", Box()), _make(Grouped, "b", b_new, want="v2"))
        )
        assert done.changed == ["grouped[b]"]
        assert list(run.engine.graph) == ["autogroup[grouped:a,b]"]
        await run.stop()

    asyncio.run(main())
    assert b_new.value == "v2"


def test_an_empty_graph_converges_at_once_and_can_be_swapped_for_a_full_one() -> None:
    a = Box()

    async def main() -> None:
        run = Running(_graph())
        await run.start()  # waits for Converged: an empty graph is converged at once
        done = await run.swap(_graph(_make(Probe, "a", a)))
        assert done.added == ["probe[a]"]
        await run.stop()

    asyncio.run(main())
    assert a.value == "ok"


def test_under_noop_a_swap_checks_the_new_vertices_and_changes_nothing() -> None:
    old, new = Box(), Box(value="before")

    async def main() -> None:
        run = Running(_graph(_make(Probe, "a", old)), noop=True)
        await run.start()
        mark = len(run.rec.reports)
        await run.swap(_graph(_make(Probe, "a", Box()), _make(Probe, "b", new)))
        assert [type(r).__name__ for r in run.rec.reports[mark:]] == ["WouldChange", "Converged"]
        await run.stop()

    asyncio.run(main())
    assert new.journal.count("check b") == 1
    assert new.value == "before"
    assert old.journal.count("check a") == 1
