"""A worker's wake-up flag, which starts the worker's loop when the loop is not running.

A worker used to keep a task for its whole life, parked in ``await event.wait()``: an
``asyncio.Event`` (its waiters' deque alone ~760 bytes), the task, its coroutine and
frame, its context, a future: ~2 KiB per resource while nothing happens, ~200 MiB at
100,000 resources. Now the loop runs only while there is something to look at: setting
the flag of a worker whose loop has ended starts a new one (``Worker.kick``), and the
loop ends when it finds the flag clear. The flag costs 56 bytes.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Wake"]


class _Kickable(Protocol):
    def kick(self) -> None: ...


class Wake:
    """``set``/``clear``/``is_set`` as on ``asyncio.Event``; ``set`` on a clear flag
    calls ``owner.kick()``, which starts the owner's loop unless it runs."""

    __slots__ = ("_owner", "_set")

    def __init__(self, owner: _Kickable) -> None:
        self._owner = owner
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._owner.kick()

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set
