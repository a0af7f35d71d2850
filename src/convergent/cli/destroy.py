"""``convergent destroy POLICY [--only BUNDLE,...] [--noop]``: drive what a policy
describes to its absent state, in reverse dependency order (:mod:`convergent.engine.teardown`).

A policy that does not load is refused whole: nothing is removed on a guess. What is
left alone is printed first, one line each with the reason; then the engine runs the
absent forms once (``--converged-timeout 0``). The state directory is opened as a run
opens it (exclusively: an agent running on it makes destroy refuse, so the two never
fight; ``--noop`` reads beside it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING

from convergent.cli.load import load_graph
from convergent.errors import ConvergentError
from convergent.render import TextRenderer, say

if TYPE_CHECKING:
    import argparse
    from typing import Any

    from convergent.engine.report import RunResult
    from convergent.graph.core import Graph
    from convergent.resources.base import Resource

__all__ = ["destroy_command", "split_names"]

NOTHING_CHANGED = "nothing was changed"


def split_names(text: str | None) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]`` (empty parts dropped)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _refuse(message: str) -> int:
    say(f"convergent: {message}")
    print(NOTHING_CHANGED, file=sys.stderr, flush=True)
    return 2


def destroy_command(args: argparse.Namespace) -> int:
    """Tear down the policy ``args.file`` (or the bundle uses of ``--only``)."""
    from convergent.cli.inputs import inputs_from
    from convergent.policy.vars import VarsError

    try:
        inputs = inputs_from(args)
    except VarsError as exc:
        return _refuse(str(exc))
    graph = load_graph(args.file, inputs)
    if graph is None:
        print(f"{NOTHING_CHANGED}: destroy runs only a policy that loads", file=sys.stderr)
        return 2
    from convergent.engine.teardown import select, teardown

    selected = None
    if args.only is not None:
        try:
            selected = select(graph.clusters, split_names(args.only))
        except ValueError as exc:
            return _refuse(f"--only: {exc}")
    plan = teardown(graph, selected)
    renderer = TextRenderer(watching=False, diff=getattr(args, "diff", False))
    for left in plan.left:
        renderer.note(f"{left.resource}: left alone: {left.reason}", event="left")
    for vid, form in plan.forms.items():
        if form != vid:
            renderer.note(f"{vid}: removed as {form}", event="left")
    from convergent.engine.report import RunResult

    result: RunResult | None = RunResult(0, 0, 0, 0, 0.0, True)
    if len(plan.graph):
        result = _run(args, plan.graph, renderer)
    if result is None:
        return 2
    renderer.note(result.summary(), event="summary")
    if args.noop:
        count = len(renderer.would_change)
        renderer.note(f"noop: {count} resource(s) would be removed or stopped; {NOTHING_CHANGED}")
    renderer.note(f"destroy: {len(plan.forms)} resource(s) taken down, {len(plan.left)} left alone")
    # Not result.exit_code: the watches of what was just removed may fire between the
    # convergence that ended the run and the result, making it read "not converged".
    return 1 if result.failed or result.blocked or result.retrying else 0


def _run(
    args: argparse.Namespace, graph: Graph[Resource[Any]], renderer: TextRenderer
) -> RunResult | None:
    from convergent.cli.run import run_with_signals
    from convergent.host.children import reap_orphans
    from convergent.state.statedir import default_state_dir, open_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    try:
        opened = open_state_dir(
            state_dir, mode="shared" if args.noop else "exclusive", after_lock=reap_orphans
        )
    except ConvergentError as exc:
        _refuse(str(exc))
        return None
    try:
        return asyncio.run(
            run_with_signals(
                graph,
                noop=args.noop,
                converged_timeout=0,
                reporter=renderer,
                state=opened.db,
            )
        )
    except ConvergentError as exc:
        _refuse(str(exc))
        return None
    finally:
        opened.close()
