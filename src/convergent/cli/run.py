"""``convergent run FILE``: converge this host to a policy, then keep it there."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from convergent.cli.load import load_graph
from convergent.cli.render import TextRenderer
from convergent.cli.statedir import default_state_dir, ensure_state_dir
from convergent.errors import ConvergentError

if TYPE_CHECKING:
    from convergent.engine.report import RunResult
    from convergent.graph.core import Graph
    from convergent.resources.base import Resource
    from convergent.state.db import StateDB

__all__ = ["STATE_DB", "open_state", "run_command", "run_with_signals"]

NOTHING_CHANGED = "nothing was changed"
STATE_DB = "state.db"  # the state database's file name in the state directory


def run_command(args: argparse.Namespace) -> int:
    """Load, converge, print the summary; the exit code says converged (0) or not (1)."""
    graph = load_graph(args.file)
    if graph is None:
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    state_dir = args.state_dir or default_state_dir()
    if not args.noop:  # noop changes nothing on the host, convergent's own state included
        try:
            ensure_state_dir(state_dir)
        except OSError as exc:
            print(
                f"convergent: cannot create the state directory {state_dir}: "
                f"{exc.strerror or exc}; pass --state-dir DIR",
                file=sys.stderr,
            )
            print(NOTHING_CHANGED, file=sys.stderr, flush=True)
            return 2
    try:
        state = open_state(state_dir, readonly=args.noop)
    except ConvergentError as exc:  # StateError: says which file and how to fix it
        print(f"convergent: {exc}", file=sys.stderr)
        print(NOTHING_CHANGED, file=sys.stderr, flush=True)
        return 2
    renderer = TextRenderer(watching=args.converged_timeout is None)
    try:
        result = asyncio.run(
            run_with_signals(
                graph,
                noop=args.noop,
                converged_timeout=args.converged_timeout,
                reporter=renderer,
                sema=args.sema,
                state=state,
            )
        )
    finally:
        if state is not None:
            state.close()
    print(result.summary(), flush=True)
    if args.noop:
        count = len(renderer.would_change)
        print(f"noop: {count} resource(s) would change; {NOTHING_CHANGED}", flush=True)
    return result.exit_code


def open_state(state_dir: str, *, readonly: bool) -> StateDB | None:
    """The state database ``state_dir/state.db``; under noop read only, and only if it exists."""
    path = os.path.join(state_dir, STATE_DB)
    if readonly and not os.path.exists(path):
        return None
    from convergent.state.db import StateDB

    return StateDB(path, readonly=readonly)


async def run_with_signals(
    graph: Graph[Resource[Any]],
    *,
    noop: bool,
    converged_timeout: float | None,
    reporter: TextRenderer,
    sema: int | None = None,
    state: StateDB | None = None,
) -> RunResult:
    """Run the engine; SIGINT and SIGTERM stop it cleanly (workers cancelled, summary kept)."""
    from convergent.engine.runner import Engine

    engine = Engine(
        graph,
        noop=noop,
        converged_timeout=converged_timeout,
        reporter=reporter,
        sema=sema,
        state=state,
    )
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def stop(sig: signal.Signals) -> None:
        print(f"{sig.name}: stopping", file=reporter.err, flush=True)
        engine.stop()

    for sig in signals:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await engine.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
