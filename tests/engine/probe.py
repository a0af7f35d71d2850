"""A resource kind for engine tests: an in-memory value the engine converges.

It is a real resource (watch/check/apply through the real engine), whose "real thing" is a
``Box`` the test owns, so a test can change the world, hold an apply open, or make it fail.
Times are read from the running loop, so under ``tests.clock.run_virtual`` they are exact.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from convergent.resources.base import Change, Context, Meta, Params, Resource


@dataclass
class Gauge:
    """How many applies run at the same time: now, and the most ever seen."""

    now: int = 0
    peak: int = 0


@dataclass
class Box:
    """The state a probe converges, plus a journal of what the engine did to it."""

    value: str = ""
    journal: list[str] = field(default_factory=list)
    times: list[tuple[str, float]] = field(default_factory=list)  # (journal line, loop time)
    fail_apply: bool = False
    fail_times: int = 0  # the next N applies fail
    apply_seconds: float = 0.0  # each apply takes this long
    watch_failures: int = 0  # the next N watches fail before calling ready()
    fail_refresh: bool = False
    gate: asyncio.Event | None = None  # when set, apply waits for it
    refresh_gate: asyncio.Event | None = None  # when set, refresh waits for it
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    refreshing: asyncio.Event = field(default_factory=asyncio.Event)
    refreshed: asyncio.Event = field(default_factory=asyncio.Event)  # a refresh returned
    gauges: list[Gauge] = field(default_factory=list)  # each counts this probe's applies
    ctx: Context | None = None

    def note(self, line: str) -> None:
        self.journal.append(line)
        self.times.append((line, asyncio.get_running_loop().time()))

    def at(self, line: str) -> list[float]:
        """The loop times at which ``line`` was noted."""
        return [t for entry, t in self.times if entry == line]


class ProbeParams(Params):
    """Parameters of ``probe``.

    want: the value to converge the box to
    """

    want: str = "ok"


class Probe(Resource[ProbeParams], kind="probe"):
    box: Box

    @classmethod
    def make(cls, name: str, box: Box, want: str = "ok", meta: Meta | None = None) -> Probe:
        probe = cls(name, meta=meta, want=want)
        probe.box = box
        return probe

    async def watch(self, ctx: Context) -> None:
        self.box.ctx = ctx
        if self.box.watch_failures > 0:
            self.box.watch_failures -= 1
            self.box.note(f"watch failed {self.name}")
            raise OSError(5, "Input/output error", f"/watched/{self.name}")
        self.box.note(f"ready {self.name}")
        ctx.ready()
        await asyncio.Event().wait()

    async def check(self, ctx: Context) -> Change | None:
        await asyncio.sleep(0)  # a real check awaits (a read): the loop runs meanwhile
        self.box.note(f"check {self.name}")
        self.box.note(f"saw {self.box.value}")
        if self.box.value == self.params.want:
            return None
        return Change(f"{self.box.value!r} -> {self.params.want!r}")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        box = self.box
        box.note(f"apply {self.name}")
        box.entered.set()
        for gauge in box.gauges:
            gauge.now += 1
            gauge.peak = max(gauge.peak, gauge.now)
        try:
            if box.apply_seconds:
                await asyncio.sleep(box.apply_seconds)
            if box.gate is not None:
                await asyncio.wait_for(box.gate.wait(), 5)
        finally:
            for gauge in box.gauges:
                gauge.now -= 1
        if box.fail_apply or box.fail_times > 0:
            box.fail_times -= 1
            raise RuntimeError(f"cannot set {self.name}")
        box.value = self.params.want
        box.note(f"applied {self.name}")
        return None

    async def refresh(self, ctx: Context) -> str | None:
        box = self.box
        box.note(f"refresh {self.name} from {','.join(sorted(ctx.refresh))}")
        box.refreshing.set()
        if box.refresh_gate is not None:
            await asyncio.wait_for(box.refresh_gate.wait(), 5)
        if box.fail_refresh:
            raise RuntimeError(f"cannot refresh {self.name}")
        box.refreshed.set()
        return None
