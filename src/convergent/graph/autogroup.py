"""Automatic grouping: compatible, mutually unreachable vertices become one vertex.

Two vertices may be merged only when neither can reach the other (merging ``a`` and
``b`` when ``a`` reaches ``b`` would put a cycle through the merged vertex). Grouping is
a pure function of the graph: :func:`autogroup` returns a new graph and leaves its input
alone, so a changed graph is simply grouped again, possibly differently.

Three roles, each replaceable:

- :class:`GroupRules` (from the resource layer) says which payloads may be grouped at
  all, which pairs are compatible, and builds the vertex that stands for a group.
- a :class:`Grouper` (one method) chooses the groups; the default,
  :class:`GreedyGrouper`, merges greedily in topological order.
- :func:`autogroup` checks the choice, builds the merged vertices and moves the members'
  edges to them: duplicates merged, ``notify`` kept if any merged edge had it.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from convergent.graph.autoedge import copy_graph
from convergent.graph.core import Edge, Graph, Identified

__all__ = ["GreedyGrouper", "GroupRules", "Grouper", "autogroup"]

T = TypeVar("T", bound=Identified)


class GroupRules(Protocol[T]):
    """What the graph layer asks the resource layer about grouping."""

    def groupable(self, payload: T) -> bool:
        """May ``payload`` be grouped with anything at all."""
        ...

    def compatible(self, a: T, b: T) -> bool:
        """May ``b`` join a group whose first member is ``a`` (both groupable)."""
        ...

    def merge(self, members: Sequence[T], senders: Mapping[str, frozenset[str]]) -> T:
        """The vertex standing for ``members``. ``senders`` maps each member's identity to
        the vertices (as identified in the grouped graph) that notify it."""
        ...


class Grouper(Protocol):
    """A grouping algorithm: which candidates to merge.

    Returns groups of vertex identities; each group must hold compatible candidates that
    are mutually unreachable, and must stay so as the groups are merged together (two
    groups may not reach each other both ways). Groups of one are ignored. A grouper that
    breaks the rule makes :func:`autogroup` raise ValueError.
    """

    def groups(
        self,
        graph: Graph[T],
        candidates: Sequence[str],
        compatible: Callable[[T, T], bool],
    ) -> list[list[str]]: ...


class _Group:
    __slots__ = ("members", "reach", "vertices")

    def __init__(self, member: str, bit: int, reach: int) -> None:
        self.members = [member]
        self.vertices = bit  # bits of the members
        self.reach = reach  # bits of the candidates reachable from the group


class GreedyGrouper:
    """Candidates in topological order each join the first earlier group that is
    compatible (with its first member) and does not reach them; otherwise they start a
    group of their own.

    Reachability is kept as bit sets over the candidates. In topological order a new
    candidate can never reach an existing group, so one bit test per group decides; a merge
    updates the groups that reach the merged one. Cost: one pass over the edges with bit
    set unions, then O(candidates x groups) bit tests.
    """

    def groups(
        self,
        graph: Graph[T],
        candidates: Sequence[str],
        compatible: Callable[[T, T], bool],
    ) -> list[list[str]]:
        if len(candidates) < 2:
            return []  # nothing to merge: the graph's order is not needed
        order = graph.topological_order()
        wanted = set(candidates)
        index = {v: i for i, v in enumerate(v for v in order if v in wanted)}
        reach: dict[str, int] = {}
        for v in reversed(order):
            bits = 0
            for t in graph.downstream(v):
                bits |= reach[t]
                i = index.get(t)
                if i is not None:
                    bits |= 1 << i
            reach[v] = bits
        groups: list[_Group] = []
        for v, i in index.items():
            bit = 1 << i
            payload = graph[v]
            joined = None
            for group in groups:
                if not group.reach & bit and compatible(graph[group.members[0]], payload):
                    joined = group
                    break
            if joined is None:
                groups.append(_Group(v, bit, reach[v]))
                continue
            touched = joined.vertices | bit
            joined.members.append(v)
            joined.vertices |= bit
            joined.reach |= reach[v]
            beyond = joined.reach | joined.vertices
            for group in groups:
                if group is not joined and group.reach & touched:
                    group.reach |= beyond
        return [group.members for group in groups if len(group.members) > 1]


def autogroup(graph: Graph[T], rules: GroupRules[T], grouper: Grouper | None = None) -> Graph[T]:
    """A new graph in which each group chosen by ``grouper`` (default: greedy) is one
    vertex built by ``rules.merge``. Every other vertex, and every edge, is kept (an edge
    of a member now starts or ends at its group)."""
    graph.validate()
    chooser = grouper if grouper is not None else GreedyGrouper()
    candidates = [v for v, payload in graph.vertices.items() if rules.groupable(payload)]
    groups = [g for g in chooser.groups(graph, candidates, rules.compatible) if len(g) > 1]
    if not groups:
        return copy_graph(graph)
    leader: dict[str, str] = {}  # member -> first member of its group
    for members in groups:
        for m in members:
            if m not in graph:
                raise ValueError(f"grouper {type(chooser).__name__} grouped {m}, not in the graph")
            if m in leader:
                raise ValueError(f"grouper {type(chooser).__name__} put {m} in two groups")
            leader[m] = members[0]
    order = _quotient_order(graph, leader, chooser)
    final: dict[str, str] = {}  # vertex or first member -> identity in the grouped graph
    merged: dict[str, T] = {}
    members_of = {members[0]: members for members in groups}
    for key in order:
        group = members_of.get(key)
        if group is None:
            final[key] = key
            continue
        senders = {
            m: frozenset(final[leader.get(e.source, e.source)] for e in _notifying(graph, m))
            for m in group
        }
        vertex = rules.merge([graph[m] for m in group], senders)
        merged[key] = vertex
        final[key] = vertex.id
    result: Graph[T] = Graph()
    for vid, payload in graph.vertices.items():
        first = leader.get(vid)
        if first is None:
            result.add(payload)
        elif first == vid:
            result.add(merged[first])
    for edge in graph.edges():
        source = final[leader.get(edge.source, edge.source)]
        target = final[leader.get(edge.target, edge.target)]
        result.add_edge(source, target, notify=edge.notify)
    return result


def _notifying(graph: Graph[T], vid: str) -> list[Edge]:
    return [e for e in (graph.edge(s, vid) for s in graph.upstream(vid)) if e and e.notify]


def _quotient_order(graph: Graph[T], leader: dict[str, str], chooser: Grouper) -> list[str]:
    """The grouped graph's vertices (keyed by first member) in topological order; raise
    ValueError naming the grouper when its groups reach each other."""
    deps: dict[str, set[str]] = {leader.get(v, v): set() for v in graph}
    for edge in graph.edges():
        deps[leader.get(edge.target, edge.target)].add(leader.get(edge.source, edge.source))
    try:
        return list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ValueError(
            f"grouper {type(chooser).__name__} merged vertices that reach each other "
            f"(groups named by their first member: {cycle})"
        ) from None
