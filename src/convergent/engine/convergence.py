"""The states a worker goes through, and the count that says when the graph is converged.

The graph is *converged* when every vertex is settled (clean, failed or blocked) and no
swap is in progress. :class:`Convergence` keeps the counts up to date from each state
change (O(1) per change), recounts when workers come or go, and lets a run wait until it
has stayed converged for ``converged_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable

__all__ = ["SETTLED", "Convergence", "State"]


class State(enum.Enum):
    WAITING = "waiting"  # has work (dirty) but an upstream is not clean yet, or not ready
    RUNNING = "running"  # in check/apply/refresh
    RETRYING = "retrying"  # a try (or the watch) failed; waiting for the retry delay
    CLEAN = "clean"  # checked, nothing left to do
    FAILED = "failed"  # failed and out of retries (check/apply/refresh or watch)
    BLOCKED = "blocked"  # has work but an upstream failed

    @property
    def settled(self) -> bool:
        return self in SETTLED


SETTLED = (State.CLEAN, State.FAILED, State.BLOCKED)  # a tuple: `in` is by identity
# The members as plain globals: on Python 3.11 ``State.FAILED`` goes through the enum
# type's ``__getattr__`` hook (~850 instructions), and a change is counted twice a pass.
_FAILED, _BLOCKED = State.FAILED, State.BLOCKED


class Convergence:
    """Counts of unsettled, failed and blocked vertices. ``on_settled(failed, blocked)`` is
    called each time the graph becomes converged (the engine reports ``Converged``)."""

    __slots__ = (
        "_on_settled",
        "_settled",
        "_unsettled",
        "blocked",
        "failed",
        "holds",
        "on_flip",
        "unsettled",
    )

    def __init__(self, on_settled: Callable[[int, int], None]) -> None:
        self._on_settled = on_settled
        self.on_flip: Callable[[], None] | None = None  # called whenever `converged` flips
        self.unsettled = 0
        self.failed = 0
        self.blocked = 0
        self.holds = 0  # swaps in progress: the graph is not converged meanwhile
        self._settled = asyncio.Event()
        self._unsettled = asyncio.Event()

    @property
    def converged(self) -> bool:
        return self.unsettled == 0

    def changed(self, old: State, new: State) -> None:
        """One vertex went from ``old`` to ``new``."""
        self.failed += (new is _FAILED) - (old is _FAILED)
        self.blocked += (new is _BLOCKED) - (old is _BLOCKED)
        settled = new in SETTLED
        if (old in SETTLED) == settled:
            return
        if settled:
            self.unsettled -= 1
            if self.unsettled == 0:
                self._now_settled(report=True)
        else:
            self.unsettled += 1
            if self.unsettled == 1:
                self._now_unsettled()

    def recount(self, states: Iterable[State], *, report: bool = True) -> None:
        """Count every vertex's state again (after workers came or went)."""
        was = self.unsettled
        every = list(states)  # list.count compares by identity first: no Python loop
        failed = every.count(State.FAILED)
        blocked = every.count(State.BLOCKED)
        unsettled = len(every) - every.count(State.CLEAN) - failed - blocked
        self.unsettled = self.holds + unsettled
        self.failed = failed
        self.blocked = blocked
        if self.unsettled == 0:
            if was or not self._settled.is_set():
                self._now_settled(report=report and was > 0)
        elif was == 0 or not self._unsettled.is_set():
            self._now_unsettled()

    def _now_settled(self, *, report: bool) -> None:
        self._unsettled.clear()
        self._settled.set()
        if report:
            self._on_settled(self.failed, self.blocked)
        if self.on_flip is not None:
            self.on_flip()

    def _now_unsettled(self) -> None:
        self._settled.clear()
        self._unsettled.set()
        if self.on_flip is not None:
            self.on_flip()

    async def long_enough(self, seconds: float | None) -> None:
        """Return once the graph has stayed converged for ``seconds`` (None: never)."""
        if seconds is None:
            await asyncio.Event().wait()
        bound = max(0.0, seconds or 0.0)
        while True:
            await self._settled.wait()
            try:
                async with asyncio.timeout(bound):
                    await self._unsettled.wait()
            except TimeoutError:
                return
