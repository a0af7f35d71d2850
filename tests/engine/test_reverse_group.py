"""Grouped resources with ``meta: {reverse: true}`` record their undo data member by member,
and are undone when they leave the graph."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent.engine import Converged, Engine
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Meta, Params, Resource
from convergent.state import StateDB
from tests.engine.support import BOUND, Recorder

WORLD: dict[str, str] = {}  # the "real thing" the slots converge (keyed by name)


class SlotParams(Params):
    """Parameters of ``undoslot``.

    want: the value of the slot
    """

    want: str = "on"


class Slot(Resource[SlotParams], kind="undoslot"):
    """A groupable, reversible kind that keeps its undo record in the state database."""

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, Slot)

    async def check(self, ctx: Context) -> Change | None:
        await asyncio.sleep(0)
        have = WORLD.get(self.name, "")
        return None if have == self.params.want else Change(f"{have!r} -> {self.params.want!r}")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        WORLD[self.name] = self.params.want
        return None

    def record_reverse(self, ctx: Context, change: Change) -> None:
        assert ctx.state is not None
        ctx.state.set_kv(f"reverse:{ctx.id}", f"{WORLD.get(self.name, '')}|{change.summary}")

    async def reverse(self, ctx: Context) -> str | None:
        assert ctx.state is not None
        record = ctx.state.get_kv(f"reverse:{ctx.id}")
        if record is None:
            return None
        WORLD[self.name] = record.split("|", 1)[0]
        return f"back to {WORLD[self.name]!r}"


def _graph(*resources: Resource[Any]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for resource in resources:
        g.add(resource)
    return g


def test_grouped_reversible_members_record_and_are_reversed(tmp_path: Path) -> None:
    WORLD.clear()
    WORLD.update(a="old-a", b="old-b")
    meta = Meta(reverse=True)

    async def main() -> None:
        with StateDB(tmp_path / "state.db") as state:
            rec = Recorder()
            graph = _graph(Slot("a", meta=meta), Slot("b", meta=meta))
            engine = Engine(graph, reporter=rec, state=state)
            assert list(engine.graph.vertices) == ["autogroup[undoslot:a,b]"]
            task = asyncio.create_task(engine.run())
            await rec.wait_for(lambda r: isinstance(r, Converged))
            assert WORLD == {"a": "on", "b": "on"}
            assert state.get_kv("reverse:undoslot[a]") == "old-a|'old-a' -> 'on'"
            assert state.get_kv("reverse:undoslot[b]") == "old-b|'old-b' -> 'on'"
            done = await asyncio.wait_for(engine.swap(_graph()), BOUND)
            assert sorted(done.reversed) == ["undoslot[a]", "undoslot[b]"]
            engine.stop()
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert WORLD == {"a": "old-a", "b": "old-b"}
