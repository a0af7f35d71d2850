"""`convergent run`'s engine wiring, in process, with graphs of noop resources."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from typing import Any

from convergent.cli.run import run_with_signals
from convergent.engine.report import Converged, Report
from convergent.graph.core import Graph
from convergent.render import WATCHING, TextRenderer
from convergent.resources.base import Resource
from convergent.resources.noop import Noop


def two_noops() -> Graph[Resource[Any]]:
    graph: Graph[Resource[Any]] = Graph()
    first = graph.add(Noop("first"))
    graph.add(Noop("second"), require=[first])
    return graph


def test_converged_timeout_0_returns_once_converged() -> None:
    out, err = io.StringIO(), io.StringIO()
    result = asyncio.run(
        asyncio.wait_for(
            run_with_signals(
                two_noops(),
                noop=False,
                converged_timeout=0,
                reporter=TextRenderer(out, err),
            ),
            10,
        )
    )
    assert result.converged
    assert result.exit_code == 0
    assert result.resources == 2
    assert out.getvalue() == err.getvalue() == ""


class SignalOnConverged(TextRenderer):
    """Sends this process ``sig`` when the run first converges (the handler is installed)."""

    def __init__(self, sig: signal.Signals) -> None:
        self.captured_out, self.captured_err = io.StringIO(), io.StringIO()
        super().__init__(self.captured_out, self.captured_err, watching=True)
        self.sig = sig

    def __call__(self, report: Report) -> None:
        super().__call__(report)
        if isinstance(report, Converged):
            os.kill(os.getpid(), self.sig)


def test_sigterm_and_sigint_stop_a_run_cleanly() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        render = SignalOnConverged(sig)
        result = asyncio.run(
            asyncio.wait_for(
                run_with_signals(
                    two_noops(),
                    noop=False,
                    converged_timeout=None,
                    reporter=render,
                ),
                10,
            )
        )
        assert result.interrupted
        assert result.exit_code == 0
        assert render.captured_out.getvalue() == WATCHING + "\n"
        assert render.captured_err.getvalue() == f"{sig.name}: stopping\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
