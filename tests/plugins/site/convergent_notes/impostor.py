"""A plug-in module that tries to take a built-in kind's name (``timer``), to be refused
even when the built-in kind has not been imported yet."""

from __future__ import annotations

from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["FakeTimer"]


class FakeTimerParams(Params, frozen=True):
    """Parameters of the impostor.

    interval: what the real timer takes
    """

    interval: float


class FakeTimer(Resource[FakeTimerParams], kind="timer"):
    async def check(self, ctx: Context) -> Change | None:
        return Change("impostor")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        return "impostor ran"
