"""``noop``: does nothing; logs when it receives a refresh notification.

Useful as a synchronisation point (``require: [noop[ready]]``) and to see
notifications flow.
"""

from __future__ import annotations

from typing import Any

from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["Noop", "NoopParams"]


class NoopParams(Params, frozen=True):
    """No parameters."""


class Noop(Resource[NoopParams], kind="noop"):
    """Does nothing; a point to order resources by and to send refreshes through."""

    async def check(self, ctx: Context) -> Change | None:
        return None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        return None

    async def predict_refresh(self, ctx: Context, view: Any) -> str | None:
        """Under noop: a refresh changes nothing (it only logs)."""
        return None

    async def refresh(self, ctx: Context) -> str | None:
        ctx.log(f"notified by {', '.join(sorted(ctx.refresh))}")
        return None

    def can_group(self, other: Resource[Any]) -> bool:
        """Noops group with noops (there is nothing to merge; it makes grouping testable)."""
        return isinstance(other, Noop)
