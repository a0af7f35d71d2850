"""A virtual clock for tests: an asyncio event loop whose time jumps instead of passing.

``run_virtual(main())`` runs ``main`` on a loop whose ``time()`` is virtual. When the loop
would block waiting for its next timer and nothing real is under way, the clock jumps
straight to that timer (trio's autojump clock): timers, ``asyncio.sleep`` and
``asyncio.timeout`` then take no real time, so a test can assert exact delays.

Nothing real is under way when all of these hold, checked in this order:

- no job submitted with ``run_in_executor`` (``asyncio.to_thread``) is unfinished;
- no child process started through the loop (``asyncio.create_subprocess_exec``) is
  still without its exit status;
- no pidfd is registered with the loop (a child process someone waits on, the way
  ``convergent.host.process`` waits);
- a non-blocking poll finds no ready descriptor (an inotify event, a pipe, a socket).

While something real is under way the loop waits for I/O for real, in slices of at most
:data:`REAL_SLICE` seconds, and the clock moves on by the real time that passed, so a
timeout around real work fires no earlier than it would on a real clock. A test whose
real work never ends therefore waits for real; the per-test timeout (pytest-timeout, in
pyproject.toml) turns that into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["REAL_SLICE", "VirtualClockLoop", "run_virtual"]

T = TypeVar("T")

REAL_SLICE = 0.05  # seconds: the longest real wait before what is under way is checked again

_PIDFD = "anon_inode:[pidfd]"


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            # Work is ready (0), or no timer at all (None): only I/O can wake the loop.
            return super().select(timeout)
        if self._loop.real_work_pending() or self._waits_on_a_child():
            start = time.monotonic()
            ready = super().select(min(timeout, REAL_SLICE))
            self._loop.advance(min(time.monotonic() - start, timeout))
            return ready
        ready = super().select(0)
        if not ready:
            self._loop.advance(timeout)
        return ready

    def _waits_on_a_child(self) -> bool:
        """A pidfd is registered for reading: someone waits for a child to exit."""
        for key in self.get_map().values():
            if key.events & selectors.EVENT_READ:
                try:
                    if os.readlink(f"/proc/self/fd/{key.fd}") == _PIDFD:
                        return True
                except OSError:
                    continue
        return False


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop with virtual time that jumps when nothing real is under way."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        self._jobs: set[asyncio.Future[Any]] = set()
        self._children: weakref.WeakSet[asyncio.SubprocessTransport] = weakref.WeakSet()
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def real_work_pending(self) -> bool:
        """An executor job is unfinished, or a child process started here has not exited."""
        if any(not job.done() for job in self._jobs):
            return True
        return any(child.get_returncode() is None for child in self._children)

    def run_in_executor(
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        job = super().run_in_executor(executor, func, *args)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super().subprocess_exec(*args, **kwargs)
        self._children.add(transport)
        return transport, protocol

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        transport, protocol = await super().subprocess_shell(*args, **kwargs)
        self._children.add(transport)
        return transport, protocol


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualClockLoop`."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
