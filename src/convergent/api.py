"""The Python API's entry points: run a graph built in code (``run``, or ``arun`` in a loop)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from convergent.engine.report import Reporter, RunResult
from convergent.engine.rungraph import run_graph
from convergent.graph.core import Graph
from convergent.resources.base import Resource

if TYPE_CHECKING:
    from convergent.state.statedir import StateDir

__all__ = ["arun", "run"]


def run(
    graph: Graph[Resource[Any]],
    *,
    converged_timeout: float | None = None,
    noop: bool = False,
    reporter: Reporter | None = None,
    sema: int | None = None,
    state_dir: str | None = None,
) -> RunResult:
    """Converge ``graph`` on this host and return the result.

    ``converged_timeout``: return that many seconds after everything converged
    (0: as soon as it converges; None: keep running until interrupted).
    ``reporter`` receives every report (see ``convergent.engine.report``); by default
    changes and failures are printed as lines (``convergent.render.TextRenderer``).
    ``sema``: check/apply at most that many resources at the same time.
    ``state_dir``: keep the state database (pending refreshes, secrets, key/values) in
    this directory, created with mode 0700 if needed; under noop it is only read, and
    only if it exists. None: no state database (refreshes are then kept in memory only,
    and ``password`` cannot keep a secret).

    Raises GraphError for a graph the engine cannot run, StateError or OSError when
    the state directory cannot be used. Runs its own event loop: from a coroutine, await
    :func:`arun` instead.
    """
    return asyncio.run(
        arun(
            graph,
            converged_timeout=converged_timeout,
            noop=noop,
            reporter=reporter,
            sema=sema,
            state_dir=state_dir,
        )
    )


async def arun(
    graph: Graph[Resource[Any]],
    *,
    converged_timeout: float | None = None,
    noop: bool = False,
    reporter: Reporter | None = None,
    sema: int | None = None,
    state_dir: str | None = None,
) -> RunResult:
    """:func:`run` in the running event loop: the same options, the same result.

    Cancelling it stops the run (every worker cancelled, the state database closed) and
    raises CancelledError; for a run that ends with its summary, keep an
    :class:`~convergent.engine.runner.Engine` and call its ``stop()``.
    """
    if reporter is None:
        from convergent.render import TextRenderer

        reporter = TextRenderer()
    opened: StateDir | None = None
    if state_dir is not None:
        from convergent.host.children import reap_orphans
        from convergent.state.statedir import open_state_dir

        opened = open_state_dir(
            state_dir, mode="shared" if noop else "exclusive", after_lock=reap_orphans
        )
    state = None if opened is None else opened.db
    try:
        return await run_graph(
            graph,
            noop=noop,
            converged_timeout=converged_timeout,
            reporter=reporter,
            sema=sema,
            state=state,
        )
    finally:
        if opened is not None:
            opened.close()
