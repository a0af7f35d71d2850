"""The vertex that stands for a group of resources, and ``prepare``, which makes groups.

``prepare(graph)`` is what runs on a graph before the engine makes its workers: automatic
edges (:mod:`convergent.graph.autoedge`), then automatic grouping
(:mod:`convergent.graph.autogroup`) with :data:`RULES`. It returns a new graph and leaves
its input alone, so a changed graph is prepared again and may group differently. (It
lives here, not in ``graph``, because it builds :class:`Group` vertices and the graph
layer imports no resource.)

Rules: a resource can be grouped when its kind is ``Groupable`` (it has ``can_group``)
and it does not say ``meta: {autogroup: false}``; ``b`` joins the group of ``a`` when
``a.can_group(b)`` and their meta parameters are equal except ``sema``: the group holds
the union of its members' semaphores.

Identity: ``autogroup[noop:a,b]``. ``autogroup`` is a label, not a registered kind (no
policy can write one, and it cannot be confused with a resource of a future ``group``
kind); the name lists the members by kind, sorted, as ``kind:name,name``, kinds joined by
``;`` (``autogroup[noop:a,b;pkg:curl]``), with ``\\``, ``,`` and ``;`` in a name escaped by
``\\``. The same members give the same identity whatever order the graph had.

A group does the contract member by member, giving each member its own Context
(``ctx.id`` is the member's ``kind[name]``; its log lines are prefixed with it):

- ``watch`` runs every member's watch; the group is ready when all of them are, and an
  event from any of them is the group's event.
- ``check`` returns ``Change(summary, members={member_id: change})`` for the members that
  differ, or None when none does. A kind may check its members in one call (one package
  query for the whole transaction) with the classmethod hook of
  :class:`~convergent.resources.abilities.ChecksGroup`; other kinds are checked member
  by member.
- ``apply`` applies each member that differs; a kind may apply its members in one go (one
  package transaction) with the classmethod hook of
  :class:`~convergent.resources.abilities.AppliesGroup`. A member that
  was notified and has nothing to apply is refreshed, as the engine would have done for
  it alone. Each entry of ``change.members`` is replaced by what the member did, so the
  report names every member.
- ``refresh`` refreshes only the members that a notifying upstream vertex pointed at.

Errors name the member; when several members fail, one error lists them all (the others
are still checked and applied).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import msgspec

from convergent.errors import ResourceError
from convergent.graph.autoedge import AutoEdgeCache, autoedges
from convergent.graph.autogroup import Grouper, autogroup
from convergent.graph.core import Graph
from convergent.resources.abilities import Groupable, Member, Refreshable
from convergent.resources.base import Change, Context, Meta, Params, Resource

__all__ = ["RULES", "Group", "GroupParams", "Member", "prepare"]

LABEL = "autogroup"


class GroupParams(Params, frozen=True):
    """No parameters: a group is made by autogrouping, never written in a policy."""


class Group(Resource[GroupParams]):
    """Several resources merged into one vertex; see the module docstring."""

    kind: ClassVar[str] = LABEL

    __slots__ = ("members", "senders")

    members: tuple[Resource[Any], ...]
    senders: dict[str, frozenset[str]]

    def __init__(
        self,
        members: Sequence[Resource[Any]],
        senders: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        """``members``: two or more resources. ``senders``: for each member's identity,
        the vertices that notify it (refreshes reach only the members they were for)."""
        if len(members) < 2:
            raise ValueError("a group needs at least two members")
        self.members = tuple(sorted(members, key=lambda m: (m.kind, m.name)))
        given = senders or {}
        self.senders = {m.id: frozenset(given.get(m.id, ())) for m in self.members}
        super().__init__(_name(self.members), GroupParams(), meta=_meta(self.members))

    @classmethod
    def of(
        cls,
        members: Sequence[Resource[Any]],
        senders: Mapping[str, frozenset[str]] | None = None,
    ) -> Group:
        """The group of ``members``: refreshable when one of them is."""
        if any(isinstance(m, Refreshable) for m in members):
            return RefreshableGroup(members, senders)
        return Group(members, senders)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Group):
            return NotImplemented
        return (type(self), self.members, self.senders, self.meta) == (
            type(other),
            other.members,
            other.senders,
            other.meta,
        )

    def __hash__(self) -> int:
        return hash(self.id)

    # -- the contract -------------------------------------------------------------------

    async def watch(self, ctx: Context) -> None:
        waiting = {m.id for m in self.members}

        def ready_of(member_id: str) -> Callable[[], None]:
            def ready() -> None:
                if member_id in waiting:
                    waiting.discard(member_id)
                    if not waiting:
                        ctx.ready()

            return ready

        async def watch_member(member: Resource[Any]) -> None:
            mctx = self._context(ctx, member, ready_of(member.id))
            try:
                await member.watch(mctx)
            except Exception as exc:
                raise ResourceError(ctx.id, f"{member.id}: {_text(exc)}") from exc
            if member.id in waiting:
                raise ResourceError(
                    ctx.id, f"{member.id}: watch returned without calling ctx.ready()"
                )

        try:
            async with asyncio.TaskGroup() as tasks:
                for member in self.members:
                    tasks.create_task(watch_member(member), name=f"watch {member.id}")
        except ExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def check(self, ctx: Context) -> Change | None:
        changes: dict[str, Change] = {}
        errors: list[tuple[str, Exception]] = []
        batches: dict[type[Resource[Any]], list[tuple[Resource[Any], Context]]] = {}
        for member in self.members:
            batches.setdefault(type(member), []).append((member, self._context(ctx, member)))
        found: dict[str, Change | None] = {}
        for kind, items in batches.items():
            hook = getattr(kind, "check_group", None)
            if hook is not None:
                try:
                    results = list(await hook(items))
                except Exception as exc:
                    errors.extend((member.id, exc) for member, _ in items)
                    continue
                if len(results) != len(items):
                    raise ResourceError(
                        ctx.id,
                        f"{kind.__name__}.check_group returned {len(results)} results "
                        f"for {len(items)} members",
                    )
                for (member, _), result in zip(items, results, strict=True):
                    found[member.id] = result
                continue
            for member, mctx in items:
                try:
                    found[member.id] = await member.check(mctx)
                except Exception as exc:
                    errors.append((member.id, exc))
        _raise(ctx.id, errors)
        for member in self.members:
            change = found.get(member.id)
            if change is not None:
                changes[member.id] = change
        if not changes:
            return None
        return Change(_summary(changes), members=changes)

    async def apply(self, ctx: Context, change: Change) -> str | None:
        planned = change.members or {}
        done: dict[str, Change] = {}
        errors: list[tuple[str, Exception]] = []
        batches: dict[type[Resource[Any]], list[Member]] = {}
        for member in self.members:
            wanted = planned.get(member.id)
            if wanted is not None:
                item = Member(member, self._context(ctx, member), wanted)
                batches.setdefault(type(member), []).append(item)
        for kind, items in batches.items():
            hook = getattr(kind, "apply_group", None)
            if hook is not None:
                try:
                    summaries = list(await hook(items))
                except Exception as exc:
                    errors.extend((item.resource.id, exc) for item in items)
                    continue
                if len(summaries) != len(items):
                    raise ResourceError(
                        ctx.id,
                        f"{kind.__name__}.apply_group returned {len(summaries)} summaries "
                        f"for {len(items)} members",
                    )
                for item, summary in zip(items, summaries, strict=True):
                    if isinstance(summary, Exception):  # this member failed alone
                        errors.append((item.resource.id, summary))
                    else:
                        done[item.resource.id] = _did(item.change, summary)
                continue
            for item in items:
                try:
                    summary = await item.resource.apply(item.ctx, item.change)
                except Exception as exc:
                    errors.append((item.resource.id, exc))
                else:
                    done[item.resource.id] = _did(item.change, summary)
        refreshed, refresh_errors = await self._refresh(ctx, skip=planned)
        done.update(refreshed)
        errors.extend(refresh_errors)
        _raise(ctx.id, errors)
        change.members = {m.id: done[m.id] for m in self.members if m.id in done}
        return _summary(change.members)

    # -- helpers ------------------------------------------------------------------------

    def _context(
        self, ctx: Context, member: Resource[Any], ready: Callable[[], None] | None = None
    ) -> Context:
        """The member's own Context: its identity, its refreshes, the group's engine."""
        prefix = f"{member.id}: "
        mctx = ctx.for_member(
            member.id,
            ready=ready if ready is not None else _nothing,
            log=lambda message: ctx.log(prefix + message),
        )
        mctx.refresh = ctx.refresh & self.senders[member.id]
        mctx.received_changed = ctx.received_changed
        return mctx

    async def _refresh(
        self, ctx: Context, skip: Mapping[str, Change]
    ) -> tuple[dict[str, Change], list[tuple[str, Exception]]]:
        """Refresh the notified refreshable members not in ``skip``."""
        done: dict[str, Change] = {}
        errors: list[tuple[str, Exception]] = []
        for member in self.members:
            if member.id in skip or not isinstance(member, Refreshable):
                continue
            mctx = self._context(ctx, member)
            if not mctx.refresh:
                continue
            try:
                summary = await member.refresh(mctx)
            except Exception as exc:
                errors.append((member.id, exc))
                continue
            if summary is not None:
                done[member.id] = Change(summary)
        return done, errors


class RefreshableGroup(Group):
    """A group with at least one refreshable member."""

    __slots__ = ()

    async def refresh(self, ctx: Context) -> str | None:
        done, errors = await self._refresh(ctx, skip={})
        _raise(ctx.id, errors)
        return _summary(done) if done else None


# -- rules and prepare ------------------------------------------------------------------


class _Rules:
    """The grouping rules of the resource layer (see the module docstring).

    Whether a kind is Groupable is looked up once per class: ``isinstance`` against a
    runtime protocol costs ~9 us a call, paid for every resource of every run.
    """

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[type, bool] = {}

    def _groupable_kind(self, cls: type) -> bool:
        known = self._kinds.get(cls)
        if known is None:
            known = self._kinds[cls] = callable(getattr(cls, "can_group", None)) and not (
                issubclass(cls, Group)
            )
        return known

    def groupable(self, payload: Resource[Any]) -> bool:
        return self._groupable_kind(type(payload)) and payload.meta.autogroup

    def compatible(self, a: Resource[Any], b: Resource[Any]) -> bool:
        return (
            self._groupable_kind(type(a))
            and cast(Groupable, a).can_group(b)
            and _meta_key(a) == _meta_key(b)
        )

    def merge(
        self, members: Sequence[Resource[Any]], senders: Mapping[str, frozenset[str]]
    ) -> Resource[Any]:
        return Group.of(members, senders)


RULES = _Rules()


def prepare(
    graph: Graph[Resource[Any]],
    *,
    grouper: Grouper | None = None,
    cache: AutoEdgeCache | None = None,
) -> Graph[Resource[Any]]:
    """A new graph: ``graph`` with its automatic edges, then its automatic groups.

    Raises what ``Graph.validate`` raises for a dangling edge or a cycle. ``grouper``
    replaces the default greedy grouping algorithm. ``cache``: the vertices' automatic
    edge uids from the preparation of an earlier version of the graph (a vertex holding
    the same resource object is not asked again).
    """
    return autogroup(autoedges(graph, cache), RULES, grouper)


# -- small pieces -----------------------------------------------------------------------


def _nothing() -> None:
    pass


def _escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")


def _name(members: Sequence[Resource[Any]]) -> str:
    by_kind: dict[str, list[str]] = {}
    for m in members:
        by_kind.setdefault(m.kind, []).append(_escape(m.name))
    return ";".join(f"{kind}:{','.join(names)}" for kind, names in by_kind.items())


def _meta(members: Sequence[Resource[Any]]) -> Meta:
    """The first member's meta (they are equal but for ``sema``), semaphores unioned by id
    (a policy gives one semaphore id one size, so the first spelling stands for all)."""
    first = members[0].meta
    sema: list[str] = []
    seen: set[str] = set()
    for m in members:
        for text, (sema_id, _) in zip(m.meta.sema, m.meta.semaphores(), strict=True):
            if sema_id not in seen:
                seen.add(sema_id)
                sema.append(text)
    if sema == first.sema:
        return first
    return msgspec.structs.replace(first, sema=sema)


def _meta_key(resource: Resource[Any]) -> dict[str, Any]:
    fields = msgspec.structs.asdict(resource.meta)
    fields.pop("sema", None)
    return fields


def _summary(changes: Mapping[str, Change]) -> str:
    return "; ".join(f"{member}: {change.summary}" for member, change in changes.items())


def _did(change: Change, summary: str | None) -> Change:
    """What a member did: its past-tense summary (or its change's), with the change's diff."""
    return Change(summary if summary is not None else change.summary, change.diff)


def _text(exc: Exception) -> str:
    if isinstance(exc, ResourceError):
        return exc.message
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _raise(group_id: str, errors: list[tuple[str, Exception]]) -> None:
    """Raise the members' failures: one as it is (naming its member), several as one."""
    if not errors:
        return
    if len(errors) == 1:
        member_id, exc = errors[0]
        if isinstance(exc, ResourceError) and exc.resource == member_id:
            raise exc
        raise ResourceError(member_id, _text(exc)) from exc
    lines = [f"{len(errors)} members failed:"]
    lines.extend(f"{member_id}: {_text(exc)}" for member_id, exc in errors)
    raise ResourceError(group_id, "\n".join(lines)) from errors[0][1]
