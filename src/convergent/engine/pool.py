"""The first passes of many workers, started a batch at a time.

A run of N resources used to start N worker tasks in one go: every task, its coroutine,
its two done callbacks and its entries in asyncio's and the task group's sets existed
at once before the first of them ran (~1.6 KiB per resource, 160 MiB at 100,000 files),
although a converged file's pass ends in its first step. :class:`FirstPasses` starts
every watch at once (so a check never runs before the whole run watches: a ``purge``
sees every managed path), then the passes :data:`BATCH` per turn of the event loop, in
one pump task: at most about two batches of tasks are alive at a time, besides the
passes that really wait for something (a command, a retry, a semaphore), which keep
their task as before. Each pass is still a task of its own, so stopping a worker
cancels it and passes that wait still run side by side.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

__all__ = ["BATCH", "FirstPasses"]

BATCH = 512  # first passes started per turn of the event loop


class _Starts(Protocol):
    def watch_first(self) -> None: ...
    def first_pass(self) -> None: ...


class FirstPasses:
    """Queue of workers owed a first pass; ``spawn`` runs the pump in the run's task group
    (the engine's ``spawn``: None once the run is over)."""

    __slots__ = ("_pump", "_queue", "_spawn")

    def __init__(
        self, spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None] | None]
    ) -> None:
        self._spawn = spawn
        self._queue: deque[_Starts] = deque()
        self._pump: asyncio.Task[None] | None = None

    def start(self, workers: Iterable[_Starts]) -> None:
        """Start the watch of every worker now, and queue their first passes."""
        queue = self._queue
        for worker in workers:
            worker.watch_first()
            queue.append(worker)
        if queue and (self._pump is None or self._pump.done()):
            self._pump = self._spawn(self._run(), "first passes")

    @property
    def pending(self) -> int:
        """Workers whose first pass is not started yet."""
        return len(self._queue)

    async def _run(self) -> None:
        queue = self._queue
        while queue:
            for _ in range(min(BATCH, len(queue))):
                queue.popleft().first_pass()
            await asyncio.sleep(0)  # let this batch run (and its tasks go) first
