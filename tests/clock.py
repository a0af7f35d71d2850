"""A virtual clock for tests: an asyncio event loop whose time jumps instead of passing.

``run_virtual(main())`` runs ``main`` on a loop whose ``time()`` is virtual. Whenever the
loop would block waiting for its next timer, and no file descriptor is ready, the clock
jumps straight to that timer (trio's autojump clock). Timers, ``asyncio.sleep`` and
``asyncio.timeout`` then take no real time, so a test can assert exact delays.
Real I/O still works: descriptors are polled without blocking before every jump.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            if not ready and timeout is None:
                # Nothing scheduled at all: only I/O can wake us; block for it.
                return super().select(None)
            return ready
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop with virtual, auto-jumping time."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualClockLoop`."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
