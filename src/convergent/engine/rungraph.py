"""``run_graph``: run a graph to convergence in one call (an :class:`Engine` made for it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convergent.engine.report import Report, Reporter, RunResult
from convergent.engine.runner import Engine

if TYPE_CHECKING:
    from convergent.graph.core import Graph
    from convergent.resources.base import Resource
    from convergent.state.db import StateDB
    from convergent.world.base import World

__all__ = ["run_graph"]


def _ignore(report: Report) -> None:
    pass


async def run_graph(
    graph: Graph[Resource[Any]],
    *,
    noop: bool = False,
    converged_timeout: float | None = None,
    reporter: Reporter = _ignore,
    sema: int | None = None,
    state: StateDB | None = None,
    world: World | None = None,
) -> RunResult:
    """Run ``graph`` to convergence; see :class:`Engine`."""
    engine = Engine(
        graph,
        noop=noop,
        converged_timeout=converged_timeout,
        reporter=reporter,
        sema=sema,
        state=state,
        world=world,
    )
    return await engine.run()
