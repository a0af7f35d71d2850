"""The abilities of ``file`` that a plain run never uses: ``Predicts`` (a noop run's
check through the predicted state), ``Destroyable`` (its absent form) and ``Reversible``
(``meta.reverse``, :mod:`.filereverse`). A base of
:class:`~convergent.resources.file.File`; their code (:mod:`.filepredict`,
:mod:`.fileabsent`) is imported on first use, not at every start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convergent.errors import ResourceError
    from convergent.resources.base import Change, Context, Resource
    from convergent.resources.predicted import Effects, View

__all__ = ["ABSENT_STATE", "FileAbilities"]

ABSENT_STATE = (
    "the file or link is removed (never what it points to), a directory only when empty "
    "(with `destroy: remove`: with everything in it); a path reached through a symlink "
    "is refused"
)


class FileAbilities:
    """``Predicts`` and ``Destroyable`` for :class:`~convergent.resources.file.File`."""

    __slots__ = ()

    absent_state, destroy_default = ABSENT_STATE, "remove"  # Destroyable

    def absent(self, explicit: bool) -> Resource[Any] | None:
        """Its absent form for ``convergent destroy`` (see :func:`.fileabsent.form`)."""
        from convergent.resources.fileabsent import form

        return form(self, explicit)  # type: ignore[arg-type]

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """What it would leave at its path (see :func:`.filepredict.predict`)."""
        from convergent.resources.filepredict import predict

        return predict(self, change, view)

    async def check_predicted(self, ctx: Context, view: View) -> Change | None:
        """Its check through the predicted state (see :func:`.filepredict.check_predicted`)."""
        from convergent.host import fs, posix
        from convergent.resources.filepredict import check_predicted

        try:
            return check_predicted(self, ctx, view)
        except (fs.PathRefused, posix.NoSuchName) as exc:
            error: ResourceError = self.error(exc)  # type: ignore[attr-defined]
            raise error from None

    def record_reverse(self, ctx: Context, change: Change) -> None:
        """meta.reverse: keep how to undo the first change (later ones keep the first)."""
        from convergent.resources import filereverse

        filereverse.record_reverse(self, ctx, change)  # type: ignore[arg-type]

    def plan_reverse(self, ctx: Context) -> str | None:
        """What :meth:`reverse` would do (read only), or None."""
        from convergent.resources.filereverse import plan_reverse

        return plan_reverse(self, ctx)  # type: ignore[arg-type]

    async def reverse(self, ctx: Context) -> str | None:
        """Undo what this resource did; None when there is nothing to undo."""
        from convergent.resources.filereverse import reverse

        return await reverse(self, ctx)  # type: ignore[arg-type]
