"""``timer``: ticks every ``interval`` seconds.

Each tick is a change: the resources after it are checked again, and those it notifies
get a refresh (``notify: exec[rotate]`` runs a command every interval). The first tick
comes one interval after the timer starts. Ticks follow a fixed grid from the start, so
they do not drift; when the engine falls behind, the missed ticks become one.

``watch`` sleeps until the next tick and then calls ``ctx.event()``; ``check`` reports
a tick when ``watch`` saw one since the last apply. The count of applied ticks is sent
downstream as ``ticks``. Under noop each tick is reported as one that would happen.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from convergent.errors import ParamError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["MIN_INTERVAL", "Timer", "TimerParams"]


MIN_INTERVAL = 0.001  # below it the ticks would come faster than the loop can run them


class TimerParams(Params, frozen=True):
    """Parameters of ``timer``: each tick is a change that refreshes what it notifies.

    interval: seconds between ticks (at least 0.001: a finer grid would only spin the
      event loop)
    """

    interval: float


class Timer(Resource[TimerParams], kind="timer"):
    """A change every ``interval`` seconds."""

    sends: ClassVar[Mapping[str, Output]] = {"ticks": Output(int)}

    _start: float | None = None  # loop time the grid of ticks starts from
    _seen: int = 0  # index on the grid of the last tick watch saw
    _applied: int = 0  # the grid index the last apply caught up with
    _ticks: int = 0  # ticks applied

    def validate(self) -> None:
        interval = self.params.interval
        if not (interval >= MIN_INTERVAL and math.isfinite(interval)):
            raise ParamError(
                "interval",
                f"must be a number of seconds >= {MIN_INTERVAL} (one millisecond), not {interval}",
            )

    async def watch(self, ctx: Context) -> None:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        start, interval = self._start, self.params.interval
        ctx.ready()
        while True:
            now = loop.time()
            target = max(self._seen + 1, math.floor((now - start) / interval) + 1)
            await asyncio.sleep(start + target * interval - now)
            self._seen = target
            ctx.event()

    async def check(self, ctx: Context) -> Change | None:
        return Change("tick") if self._seen > self._applied else None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        self._applied = self._seen
        self._ticks += 1
        return f"tick {self._ticks}"

    def outputs(self) -> Mapping[str, Any]:
        return {"ticks": self._ticks}
