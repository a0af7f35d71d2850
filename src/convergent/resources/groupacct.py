"""``group``: a local group, kept as described; ``state: absent`` removes it.

::

    group:
      deploy: {gid: 1500}

The resource's name is the group's name. State is read from /etc/group parsed directly,
never through NSS (a group only in LDAP or sssd is not seen, and never changed); changes
go through groupadd, groupmod and groupdel, one tool at a time per run, and a tool's
failure is reported with its own message (``groupdel`` refuses the primary group of a
user). /etc/group is watched (it is replaced by rename): a group removed or changed by
hand is put back at once by a running agent. Members are the ``user`` kind's business
(its ``groups``). (The module is not ``group.py``: that one holds automatic grouping.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.host import accounts
from convergent.host.posix import MAX_ID
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.predicted import Account, Effects, View

__all__ = ["Group", "GroupParams"]


class GroupParams(Params, frozen=True):
    """A local group; the resource's name is the group's name.

    state: present or absent (absent: groupdel, refused for a user's primary group)
    gid: numeric gid, 0-4294967294 (default: the next free one at creation, then left alone);
      one group's only: a second group of the policy with it is refused at load
    system: create a system group (gid below GID_MIN); only at creation
    """

    state: Literal["present", "absent"] = "present"
    gid: int | None = None
    system: bool = False


class Group(Resource[GroupParams], kind="group"):
    """A local group, created, changed or removed with the shadow tools."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = (
        "removed with groupdel, only when the entry says `destroy: remove`"
    )
    destroy_default: ClassVar[str] = "keep"

    def absent(self, explicit: bool) -> Group | None:
        """Removed; None for ``state: absent``."""
        if self.params.state == "absent":
            return None
        return Group(self.name, GroupParams(state="absent"), meta=self.meta)

    def validate(self) -> None:
        p = self.params
        why = accounts.valid_name(self.name)
        if why is not None:
            raise ParamError(None, why)
        if p.gid is not None and not 0 <= p.gid <= MAX_ID:
            raise ParamError("gid", f"{p.gid} is out of range: a gid is 0 to {MAX_ID}")
        if p.state == "absent":
            for field in ("gid", "system"):
                if getattr(p, field) != getattr(_DEFAULTS, field):
                    raise ParamError(field, "has no meaning with state: absent; remove it")

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch /etc/group."""
        from convergent.resources.fswatch import FsWatcher

        stop = ctx.shared(FsWatcher).watch(accounts.GROUP, ctx.event)
        ctx.ready()
        return stop

    async def check(self, ctx: Context) -> Change | None:
        summary, _ = self._plan(ctx)
        return Change(summary) if summary else None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        summary, argv = self._plan(ctx)
        if argv:
            try:
                await accounts.run_tool(argv, ctx.shared(accounts.tool_lock))
            except accounts.ToolError as exc:
                raise ResourceError(ctx.id, str(exc)) from None
        return summary

    def _plan(self, ctx: Context) -> tuple[str | None, list[str]]:
        p = self.params
        try:
            current = accounts.read_groups().get(self.name)
        except OSError as exc:
            raise ResourceError(ctx.id, f"cannot read {accounts.GROUP}: {exc.strerror}") from None
        if p.state == "absent":
            if current is None:
                return None, []
            return "removed", ["groupdel", "--", self.name]
        if current is None:
            argv = ["groupadd"] + (["-r"] if p.system else [])
            if p.gid is not None:
                argv += ["-g", str(p.gid)]
            summary = "created" + (f" (gid {p.gid})" if p.gid is not None else "")
            return summary, [*argv, "--", self.name]
        if p.gid is not None and p.gid != current.gid:
            return f"gid {current.gid} -> {p.gid}", ["groupmod", "-g", str(p.gid), "--", self.name]
        return None, []

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: the account it would leave (``group:NAME``: absent, or present with
        the gid the policy gives, or keeps; not known for a new one without ``gid``)."""
        p = self.params
        key = f"group:{self.name}"
        if p.state == "absent":
            return Effects(accounts={key: Account(False)})
        try:
            current = accounts.read_groups().get(self.name)
        except OSError:
            return Effects(accounts={key: Account(True)})
        gid = p.gid if p.gid is not None else (current.gid if current is not None else None)
        return Effects(accounts={key: Account(True, gid)})

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str, ...]:
        """``group:NAME`` (and ``gid:N`` with a gid): its users, files and commands."""
        if self.params.state == "absent":
            return ()
        gid = self.params.gid
        return (f"group:{self.name}",) + ((f"gid:{gid}",) if gid is not None else ())

    def needs(self) -> Sequence[Sequence[str]]:
        return ()


_DEFAULTS = GroupParams()
