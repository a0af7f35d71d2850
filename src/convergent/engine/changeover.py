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

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from convergent.engine.recv import Binding, bindings
from convergent.errors import GraphError
from convergent.graph.autogroup import GreedyGrouper
from convergent.graph.core import Graph
from convergent.resources.base import Resource
from convergent.resources.group import Group, prepare

__all__ = ["Grouper", "Plan", "Swapped"]


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

    __slots__ = ("bindings", "graph", "source", "vertex_of")

    def __init__(self, source: Graph[Resource[Any]], grouper: Grouper | None = None) -> None:
        """Raises GraphError for a dangling edge, a cycle, a wrong recv or a semaphore
        with two sizes."""
        source.validate()
        self.source = source
        self.bindings: dict[str, tuple[Binding, ...]] = bindings(source)
        excluded = set(self.bindings)
        try:
            graph = prepare(source, grouper=grouper or Grouper(excluded))
        except ValueError:
            if grouper is None:
                raise
            graph = prepare(source, grouper=Grouper(excluded))  # kept groups reach each other
        check_semaphores(graph)
        self.graph = graph
        self.vertex_of: dict[str, str] = {}
        for vid, payload in graph.vertices.items():
            if isinstance(payload, Group):
                for member in payload.members:
                    self.vertex_of[member.id] = vid
            else:
                self.vertex_of[vid] = vid

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
