"""What the engine runs, and how a new graph replaces it: plans, diffs, reversal hooks.

A :class:`Plan` is a graph as the engine runs it: the graph as given (its vertices are
the *members*, one per resource), its recv bindings, and the prepared graph (automatic
edges, automatic groups) whose vertices get workers.

The live graph changeover (:meth:`Engine.swap <convergent.engine.runner.Engine.swap>`)
compares two graphs member by member, never by group identity: a member is *unchanged*
when its kind, name, parameters (as declared, before recv), meta and recv bindings are
equal. Grouping is sticky across a swap (:class:`Grouper`): an old group whose members
are all unchanged, still compatible and still apart is kept as it was, an unchanged
member that was alone stays alone, and only new or changed members are grouped afresh;
so unchanged vertices keep their workers. (When the kept groups would reach each other
in the new graph the whole graph is grouped afresh, and the regrouped members restart.)
A swap costs what changed: a plan hands its :class:`~convergent.graph.autoedge.AutoEdgeCache`
to the next, so only new or replaced resource objects are asked what they provide and
need (a collector keeps the objects of unchanged exports), an unchanged member that is
the same object is not compared parameter by parameter, and a graph without groupable
candidates is not ordered for grouping.

Reversal: a resource with ``meta: {reverse: true}`` whose kind is
:class:`~convergent.resources.abilities.Reversible` is undone when it leaves the graph.
Two optional methods help a kind do that (the protocols
:class:`~convergent.resources.abilities.RecordsReverse` and
:class:`~convergent.resources.abilities.PlansReverse`):

- ``record_reverse(ctx, change)``: called before each ``apply`` of such a resource (never
  under noop), so the kind can keep what it needs to undo the change (``file`` keeps,
  once, whether it created the file or what content and mode it had).
- ``plan_reverse(ctx)``: read only; what ``reverse`` would do (``"remove"``), for noop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.engine.report import Changed, ChangeText, Failed, Report, WouldChange
from convergent.engine.vertexmap import VertexOf
from convergent.errors import GraphError, as_resource_error
from convergent.graph.autoedge import AutoEdgeCache, copy_graph
from convergent.graph.autogroup import GreedyGrouper
from convergent.graph.core import Graph
from convergent.resources.abilities import PlansReverse, RecordsReverse, Reversible
from convergent.resources.base import Change, Context, Resource
from convergent.resources.group import Group, prepare
from convergent.resources.recv import Binding, bindings

if TYPE_CHECKING:
    from convergent.engine.worker import Worker

__all__ = [
    "Grouper",
    "Plan",
    "Swapped",
    "check_semaphores",
    "link",
    "plan_swap",
    "record_reverse",
    "reverse",
    "same_graph",
    "same_upstream",
    "upstream_members",
]


class Swapped(msgspec.Struct, frozen=True):
    """What a swap did, by resource (members, not group vertices)."""

    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    changed: list[str] = msgspec.field(default_factory=list)
    reversed: list[str] = msgspec.field(default_factory=list)  # removed ones that were undone

    def text(self) -> str:
        """``+2 -1 ~1 resources``."""
        return f"+{len(self.added)} -{len(self.removed)} ~{len(self.changed)} resources"


class Grouper:
    """The engine's grouping algorithm: greedy (the default), with two rules on top.

    - A resource that receives values (``recv``) is never grouped: its parameters change
      at run time, and a group's are fixed.
    - ``keep`` (on a swap): these old groups stay as they were when all their members are
      still candidates, compatible and apart; ``alone`` members stay alone. Every other
      candidate is grouped greedily.
    """

    def __init__(
        self,
        excluded: set[str],
        keep: Sequence[Sequence[str]] = (),
        alone: set[str] | None = None,
    ) -> None:
        self.excluded = excluded
        self.keep = keep
        self.alone = alone or set()

    def groups(
        self,
        graph: Graph[Any],
        candidates: Sequence[str],
        compatible: Callable[[Any, Any], bool],
    ) -> list[list[str]]:
        allowed = [c for c in candidates if c not in self.excluded]
        present = set(allowed)
        chosen: list[list[str]] = []
        used: set[str] = set()
        for members in self.keep:
            if (
                all(m in present for m in members)
                and all(compatible(graph[members[0]], graph[m]) for m in members[1:])
                and _apart(graph, members)
            ):
                chosen.append(list(members))
                used.update(members)
        free = [c for c in allowed if c not in used and c not in self.alone]
        chosen.extend(GreedyGrouper().groups(graph, free, compatible))
        return chosen


def _apart(graph: Graph[Any], members: Sequence[str]) -> bool:
    """No member reaches another."""
    inside = set(members)
    return all(not (graph.descendants(m) & inside) for m in members)


class Plan:
    """A graph as the engine runs it; see the module docstring."""

    __slots__ = ("bindings", "cache", "graph", "source", "vertex_of")

    def __init__(
        self,
        source: Graph[Resource[Any]],
        grouper: Grouper | None = None,
        *,
        cache: AutoEdgeCache | None = None,
        received: dict[str, tuple[Binding, ...]] | None = None,
    ) -> None:
        """Raises GraphError for a dangling edge, a cycle, a wrong recv (a secret into a
        ``value`` included: the world holds no secret in clear) or a semaphore with two
        sizes. ``cache``: the automatic edge uids of an earlier plan's vertices, reused
        for the same resource objects (a swap asks only the new ones); ``received``: the
        recv bindings of ``source`` when the caller has them already."""
        source.validate()
        self.source = source
        self.cache = cache if cache is not None else AutoEdgeCache()
        self.bindings: dict[str, tuple[Binding, ...]] = (
            received if received is not None else bindings(source)
        )
        for rid, pairs in self.bindings.items():
            secret = next((b for b in pairs if b.secret), None)
            if secret is not None and source[rid].kind == "value":
                raise GraphError(
                    f"{rid}: recv {secret.param}: {secret.source} is a secret, and a value is "
                    "published to every host in clear; share the secret another way"
                )
        excluded = set(self.bindings)
        try:
            graph = prepare(source, grouper=grouper or Grouper(excluded), cache=self.cache)
        except ValueError:
            if grouper is None:
                raise
            # kept groups reach each other
            graph = prepare(source, grouper=Grouper(excluded), cache=self.cache)
        check_semaphores(graph)
        self.graph = graph
        self.vertex_of: Mapping[str, str] = VertexOf(graph.vertices)  # member -> its vertex

    def members(self, vid: str) -> tuple[str, ...]:
        """The member identities of vertex ``vid`` (``(vid,)`` for one that is not here)."""
        payload = self.graph.vertices.get(vid)
        if isinstance(payload, Group):
            return tuple(m.id for m in payload.members)
        return (vid,)

    def groups(self) -> list[list[str]]:
        """The member identities of each group vertex."""
        return [
            [m.id for m in payload.members]
            for payload in self.graph.vertices.values()
            if isinstance(payload, Group)
        ]


def check_semaphores(graph: Graph[Resource[Any]]) -> None:
    """Raise GraphError when one semaphore id is given two sizes."""
    sizes: dict[str, tuple[int, str]] = {}
    for vid, resource in graph.vertices.items():
        if not resource.meta.sema:
            continue
        for sema_id, size in resource.meta.semaphores():
            known = sizes.setdefault(sema_id, (size, vid))
            if known[0] != size:
                raise GraphError(
                    f"semaphore '{sema_id}' has size {size} in {vid} but {known[0]} in "
                    f"{known[1]}; give it the same size everywhere"
                )


def plan_swap(
    old: Plan,
    graph: Graph[Resource[Any]],
    running: Mapping[str, Resource[Any]],
    workers: Mapping[str, Worker],
) -> tuple[Swapped, Plan, dict[str, Worker]]:
    """What replacing ``old`` (run by ``workers``, whose members are ``running``) with
    ``graph`` takes: the diff, the new plan (sticky grouping) and the workers that stay.

    Raises GraphError for a graph the engine cannot run; nothing has changed then.
    """
    graph.validate()
    received = bindings(graph)  # members are compared before they are grouped
    changed = [
        mid
        for mid, resource in graph.vertices.items()
        if mid in old.source and not _unchanged(old, running, workers, mid, resource, received)
    ]
    done = Swapped(
        added=[mid for mid in graph.vertices if mid not in old.source],
        removed=[mid for mid in old.source.vertices if mid not in graph],
        changed=changed,
    )
    restart = set(changed)
    keep_groups = [g for g in old.groups() if not restart.intersection(g)]
    alone = {
        mid
        for mid, vid in old.vertex_of.items()
        if vid == mid and mid in graph and mid not in restart
    }
    grouper = Grouper(set(received), keep_groups, alone)
    plan = Plan(graph, grouper, cache=old.cache, received=received)
    keep: dict[str, Worker] = {}
    for vid, payload in plan.graph.vertices.items():
        worker = workers.get(vid)
        if worker is not None and _same_vertex(worker, payload, restart):
            keep[vid] = worker
    return done, plan, keep


def _unchanged(
    old: Plan,
    running: Mapping[str, Resource[Any]],
    workers: Mapping[str, Worker],
    mid: str,
    resource: Resource[Any],
    new_bindings: dict[str, tuple[Binding, ...]],
) -> bool:
    """Whether member ``mid`` (in the running graph) is the same as ``resource``."""
    current = running.get(mid)
    if current is None or type(current) is not type(resource):
        return False
    if current is resource and mid not in old.bindings and mid not in new_bindings:
        return True  # the same object receiving nothing (a collected export kept as built)
    worker = workers.get(old.vertex_of.get(mid, ""))
    declared = worker.declared if worker is not None and worker.resource is current else None
    params = declared if declared is not None else current.params
    return (
        params == resource.params
        and current.meta == resource.meta
        and old.bindings.get(mid, ()) == new_bindings.get(mid, ())
    )


def _same_vertex(worker: Worker, payload: Resource[Any], restart: set[str]) -> bool:
    """Whether a running worker can stand for the new vertex ``payload`` (same identity)."""
    if worker.stopped or isinstance(worker.resource, Group) != isinstance(payload, Group):
        return False
    members = payload.members if isinstance(payload, Group) else (payload,)
    return not any(m.id in restart for m in members) and worker.resource.meta == payload.meta


_NO_WORKERS: list[Worker] = []
_NO_EDGES: list[tuple[Worker, bool]] = []


def upstream_members(upstream: Sequence[Worker]) -> frozenset[str]:
    """The member identities of the workers ``upstream``."""
    return frozenset(m.id for up in upstream for m in up.members)


def same_upstream(before: Sequence[Worker], after: Sequence[Worker]) -> bool:
    """Whether a kept worker depends on the same members as before a swap: the same
    worker objects (kept ones hold their resource, so their members), or lists that
    name the same members."""
    if len(before) == len(after) and all(a is b for a, b in zip(before, after, strict=True)):
        return True
    return upstream_members(before) == upstream_members(after)


def link(plan: Plan, workers: Mapping[str, Worker], kept: bool) -> Graph[Resource[Any]]:
    """Connect ``workers`` along the edges of ``plan``; returns the graph the engine shows
    (``kept``: some workers kept running, so it holds their resources, not the plan's)."""
    upstream: dict[str, list[Worker]] = {}
    downstream: dict[str, list[tuple[Worker, bool]]] = {}
    for edge in plan.graph.edges():
        downstream.setdefault(edge.source, []).append((workers[edge.target], edge.notify))
        upstream.setdefault(edge.target, []).append(workers[edge.source])
    for vid, worker in workers.items():  # no edge: one shared empty list, never written
        worker.link(upstream.get(vid, _NO_WORKERS), downstream.get(vid, _NO_EDGES))
    if not kept:
        return plan.graph
    # The plan's edges (frozen: shared), each vertex holding its worker's resource; no
    # add() and add_edge() per vertex and edge at every swap of a large graph (W9b).
    graph = copy_graph(plan.graph)
    graph._vertices = {vid: worker.resource for vid, worker in workers.items()}
    return graph


def record_reverse(
    resource: Resource[Any], ctx: Context, change: Change, context: Callable[[str], Context]
) -> None:
    """``meta.reverse``, before an apply: let the kind keep what it needs to undo
    ``change``; a group's members each with their own Context (``context(member_id)``)
    and their own part of the change."""
    if not isinstance(resource, Group):
        if isinstance(resource, RecordsReverse) and isinstance(resource, Reversible):
            resource.record_reverse(ctx, change)
        return
    parts = change.members or {}
    for member in resource.members:
        part = parts.get(member.id)
        if part is not None and member.meta.reverse:
            record_reverse(member, context(member.id), part, context)


async def reverse(
    resource: Resource[Any], ctx: Context, *, noop: bool, report: Callable[[Report], None]
) -> bool:
    """Undo a resource that left the graph, if it asks for it; True when undone. Reports
    what it did (under noop: what it would do)."""
    if not (resource.meta.reverse and isinstance(resource, Reversible)):
        return False
    rid = resource.id
    try:
        if noop or resource.meta.noop:
            if isinstance(resource, PlansReverse):
                planned = resource.plan_reverse(ctx)
                if planned is not None:
                    report(WouldChange(rid, ChangeText(f"would reverse: {planned}")))
            else:
                report(WouldChange(rid, ChangeText("would reverse")))
            return False
        start = time.perf_counter()
        summary = await resource.reverse(ctx)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        report(Failed.of(rid, as_resource_error(rid, exc, "reverse: ")))
        return False
    if summary is None:
        return False
    text = f"reversed: {summary}"
    report(Changed.of(rid, text, Change(text), time.perf_counter() - start))
    return True


def same_graph(a: Graph[Resource[Any]], b: Graph[Resource[Any]]) -> bool:
    """The same resources (kind, name, parameters, meta) and edges."""
    if a.vertices.keys() != b.vertices.keys():
        return False
    for vid, resource in a.vertices.items():
        other = b[vid]
        if resource.params != other.params or resource.meta != other.meta:
            return False
    return set(a.edges()) == set(b.edges())
