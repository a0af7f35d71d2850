"""The Python API's entry point: run a graph built in code."""

from __future__ import annotations

import asyncio
from typing import Any

from convergent.engine.report import Reporter, RunResult
from convergent.engine.runner import Engine
from convergent.graph.core import Graph
from convergent.resources.base import Resource

__all__ = ["run"]


def run(
    graph: Graph[Resource[Any]],
    *,
    converged_timeout: float | None = None,
    noop: bool = False,
    reporter: Reporter | None = None,
) -> RunResult:
    """Converge ``graph`` on this host and return the result.

    ``converged_timeout``: return that many seconds after everything converged
    (0: as soon as it converges; None: keep running until interrupted).
    ``reporter`` receives every report (see ``convergent.engine.report``); by default
    changes and failures are printed like ``convergent run`` prints them.
    """
    if reporter is None:
        from convergent.cli.render import TextRenderer

        reporter = TextRenderer()
    engine = Engine(graph, noop=noop, converged_timeout=converged_timeout, reporter=reporter)
    return asyncio.run(engine.run())
