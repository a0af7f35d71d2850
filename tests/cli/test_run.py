"""`convergent run`'s engine wiring, in process, with graphs of noop resources."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
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
    before = signal.getsignal(signal.SIGINT)  # ignored in a shell's background job
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
    try:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


# epoll_wait and epoll_pwait: x86_64 (232, 281), aarch64 (22, epoll_pwait only)
_EPOLL_WAITS = {"232", "281"} if os.uname().machine == "x86_64" else {"22"}


def _waits_in_epoll(tid: int) -> bool:
    """Whether thread ``tid`` sleeps in epoll_wait (True when the kernel does not say)."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            return f.read().split(" ", 1)[0] in _EPOLL_WAITS
    except OSError:
        return True


class SignalFromThreadOnConverged(TextRenderer):
    """At the first convergence a thread waits until the loop's thread sleeps in the
    selector (``/proc/self/task/TID/syscall``), then sends ``SIGTERM`` to itself: the
    signal lands on that thread, and nothing else would wake the loop."""

    def __init__(self) -> None:
        self.captured_out, self.captured_err = io.StringIO(), io.StringIO()
        super().__init__(self.captured_out, self.captured_err, watching=True)
        self.sender: threading.Thread | None = None

    def __call__(self, report: Report) -> None:
        super().__call__(report)
        if isinstance(report, Converged):
            loop_thread = threading.get_native_id()

            def send() -> None:
                deadline = time.monotonic() + 10
                while not _waits_in_epoll(loop_thread) and time.monotonic() < deadline:
                    os.sched_yield()
                signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

            self.sender = threading.Thread(target=send)
            self.sender.start()


def test_a_signal_landing_on_another_thread_still_stops_the_run() -> None:
    render = SignalFromThreadOnConverged()
    previous = signal.getsignal(signal.SIGTERM)
    result = asyncio.run(
        asyncio.wait_for(
            run_with_signals(two_noops(), noop=False, converged_timeout=None, reporter=render),
            10,
        )
    )
    assert render.sender is not None
    render.sender.join(10)
    assert result.interrupted
    assert render.captured_err.getvalue() == "SIGTERM: stopping\n"
    assert signal.getsignal(signal.SIGTERM) is previous
    assert signal.set_wakeup_fd(-1) == -1  # none left behind


def test_a_handler_that_cannot_be_set_leaves_every_signal_as_it_was() -> None:
    """SIGKILL cannot be caught: setting the handlers fails, and the one set before it
    (SIGUSR1) and the wake-up descriptor are put back."""
    from convergent.cli.run import _on_signals

    def handler(sig: signal.Signals) -> None:
        raise AssertionError("never called")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = signal.getsignal(signal.SIGUSR1)
        try:
            _on_signals(loop, {signal.SIGUSR1: handler, signal.SIGKILL: handler})
        except OSError:
            pass
        else:
            raise AssertionError("SIGKILL's handler was set")
        assert signal.getsignal(signal.SIGUSR1) is before
        assert signal.set_wakeup_fd(-1) == -1  # none left behind

    asyncio.run(main())
