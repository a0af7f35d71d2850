"""The world a run is given is every resource's ``ctx.world``."""

from __future__ import annotations

import asyncio

from convergent.engine.runner import Engine
from convergent.graph.core import Graph
from convergent.resources.kv import Kv
from convergent.world.local import LocalWorld


def test_the_engine_gives_its_world_to_every_resource() -> None:
    world = LocalWorld(hostname="here")
    graph: Graph[Kv] = Graph()
    graph.add(Kv("greeting", value="hello"))

    async def main() -> int:
        engine = Engine(graph, converged_timeout=0, world=world)
        return (await engine.run()).exit_code

    assert asyncio.run(main()) == 0
    # Wherever the kv kind keeps its key, it is in this world (and in no other).
    assert "hello" in asyncio.run(world.get_prefix("")).values()
