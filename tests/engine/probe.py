"""A resource kind for engine tests: an in-memory value the engine converges.

It is a real resource (watch/check/apply through the real engine), whose "real thing" is a
``Box`` the test owns, so a test can change the world, hold an apply open, or make it fail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from convergent.resources.base import Change, Context, Params, Resource


@dataclass
class Box:
    """The state a probe converges, plus a journal of what the engine did to it."""

    value: str = ""
    journal: list[str] = field(default_factory=list)
    fail_apply: bool = False
    gate: asyncio.Event | None = None  # when set, apply waits for it
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    ctx: Context | None = None


class ProbeParams(Params):
    """Parameters of ``probe``.

    want: the value to converge the box to
    """

    want: str = "ok"


class Probe(Resource[ProbeParams], kind="probe"):
    box: Box

    @classmethod
    def make(cls, name: str, box: Box, want: str = "ok") -> Probe:
        probe = cls(name, want=want)
        probe.box = box
        return probe

    async def watch(self, ctx: Context) -> None:
        self.box.ctx = ctx
        self.box.journal.append(f"ready {self.name}")
        ctx.ready()
        await asyncio.Event().wait()

    async def check(self, ctx: Context) -> Change | None:
        self.box.journal.append(f"check {self.name}")
        if self.box.value == self.params.want:
            return None
        return Change(f"{self.box.value!r} -> {self.params.want!r}")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        self.box.journal.append(f"apply {self.name}")
        self.box.entered.set()
        if self.box.gate is not None:
            await asyncio.wait_for(self.box.gate.wait(), 5)
        if self.box.fail_apply:
            raise RuntimeError(f"cannot set {self.name}")
        self.box.value = self.params.want
        self.box.journal.append(f"applied {self.name}")
        return None

    async def refresh(self, ctx: Context) -> str | None:
        self.box.journal.append(f"refresh {self.name} from {','.join(sorted(ctx.refresh))}")
        return None
