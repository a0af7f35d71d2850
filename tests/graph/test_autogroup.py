"""Automatic grouping: only mutually unreachable vertices merge, edges follow, pluggable."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.graph import Graph
from convergent.graph.autogroup import GreedyGrouper, autogroup
from convergent.resources.base import Meta, Resource
from convergent.resources.exec import Exec
from convergent.resources.group import Group, prepare
from convergent.resources.noop import Noop

# -- plain payloads and rules -------------------------------------------------------------


@dataclass(frozen=True)
class P:
    name: str
    flavour: str = "x"  # payloads group only with the same flavour
    groupable: bool = True

    @property
    def id(self) -> str:
        return f"p[{self.name}]"


@dataclass(frozen=True)
class Merged:
    members: tuple[P, ...]
    senders: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "merged[" + ",".join(sorted(m.name for m in self.members)) + "]"


class Rules:
    def groupable(self, payload: Any) -> bool:
        return isinstance(payload, P) and payload.groupable

    def compatible(self, a: Any, b: Any) -> bool:
        return bool(a.flavour == b.flavour)

    def merge(self, members: Sequence[Any], senders: Mapping[str, frozenset[str]]) -> Any:
        return Merged(tuple(members), dict(senders))


def members_of(payload: Any) -> list[str]:
    return [m.id for m in payload.members] if isinstance(payload, Merged) else [payload.id]


@st.composite
def dags(draw: st.DrawFn) -> Graph[Any]:
    n = draw(st.integers(1, 14))
    g: Graph[Any] = Graph()
    for i in range(n):
        g.add(P(str(i), draw(st.sampled_from("xy")), draw(st.integers(0, 4)) > 0))
    rank = draw(st.permutations(range(n)))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=2 * n))
    for a, b in pairs:
        if rank[a] < rank[b]:
            g.add_edge(f"p[{a}]", f"p[{b}]", notify=draw(st.booleans()))
    return g


@settings(max_examples=400, deadline=None)
@given(dags())
def test_grouping_merges_only_unreachable_vertices_and_keeps_every_vertex_and_edge(
    g: Graph[Any],
) -> None:
    result = autogroup(g, Rules())
    assert result.find_cycle() is None
    where: dict[str, str] = {}
    for vid, payload in result.vertices.items():
        for member in members_of(payload):
            assert member not in where  # in exactly one vertex
            where[member] = vid
    assert set(where) == set(g.vertices)
    for payload in result.vertices.values():
        group = members_of(payload)
        for a in group:
            assert g[a].groupable or len(group) == 1
            for b in group:
                assert a == b or not g.reachable(a, b)  # never merges reachable vertices
                assert g[a].flavour == g[b].flavour
    for edge in g.edges():
        kept = result.edge(where[edge.source], where[edge.target])
        assert kept is not None
        assert kept.notify or not edge.notify
    for edge in result.edges():  # and no edge that was not there
        assert any(
            g.edge(a, b) is not None and (g.edge(a, b).notify or not edge.notify)  # type: ignore[union-attr]
            for a in members_of(result[edge.source])
            for b in members_of(result[edge.target])
        )


def test_two_groups_that_would_reach_each_other_are_not_both_made() -> None:
    # a -> c and d -> b: {a, b} and {c, d} are each mutually unreachable, but together
    # they would form a cycle.
    g: Graph[Any] = Graph()
    for name in "abcd":
        g.add(P(name))
    g.add_edge("p[a]", "p[c]")
    g.add_edge("p[d]", "p[b]")
    result = autogroup(g, Rules())
    assert result.find_cycle() is None
    assert len(result) == 2  # a+d and b+c: the greedy order finds a safe pairing
    assert sorted(sorted(members_of(p)) for p in result.vertices.values()) == [
        ["p[a]", "p[d]"],
        ["p[b]", "p[c]"],
    ]


def test_edges_of_members_move_to_the_group_deduplicated_with_notify_kept() -> None:
    g: Graph[Any] = Graph()
    g.add(P("src", flavour="s"))
    g.add(P("a"), require=["p[src]"])
    g.add(P("b"))
    g.add_edge("p[src]", "p[b]", notify=True)
    g.add(P("dst", flavour="d"), require=["p[a]", "p[b]"])
    result = autogroup(g, Rules())
    assert sorted(result) == ["merged[a,b]", "p[dst]", "p[src]"]
    assert sorted((e.source, e.target, e.notify) for e in result.edges()) == [
        ("merged[a,b]", "p[dst]", False),
        ("p[src]", "merged[a,b]", True),
    ]
    merged = result["merged[a,b]"]
    assert merged.senders == {"p[a]": frozenset(), "p[b]": frozenset({"p[src]"})}


def test_senders_are_named_as_in_the_grouped_graph() -> None:
    g: Graph[Any] = Graph()
    g.add(P("s1", flavour="s"))
    g.add(P("s2", flavour="s"))
    g.add(P("r1"))
    g.add(P("r2"))
    g.add_edge("p[s1]", "p[r1]", notify=True)
    result = autogroup(g, Rules())
    receivers = result["merged[r1,r2]"]
    assert receivers.senders["p[r1]"] == frozenset({"merged[s1,s2]"})


def test_grouping_is_a_pure_function_of_the_graph_and_regroups_after_a_change() -> None:
    g: Graph[Any] = Graph()
    for name in "abc":
        g.add(P(name))
    first = autogroup(g, Rules())
    assert list(first) == ["merged[a,b,c]"]
    assert list(g) == ["p[a]", "p[b]", "p[c]"]  # the input is left alone
    g.add_edge("p[a]", "p[b]")
    second = autogroup(g, Rules())
    assert sorted(second) == ["merged[a,c]", "p[b]"]


# -- the pluggable algorithm ---------------------------------------------------------------


class Nothing:
    def groups(
        self, graph: Graph[Any], candidates: Sequence[str], compatible: Callable[[Any, Any], bool]
    ) -> list[list[str]]:
        return []


class Everything:
    def groups(
        self, graph: Graph[Any], candidates: Sequence[str], compatible: Callable[[Any, Any], bool]
    ) -> list[list[str]]:
        return [list(candidates)]


def test_a_grouper_is_pluggable() -> None:
    g: Graph[Any] = Graph()
    g.add(P("a"))
    g.add(P("b"))
    assert list(autogroup(g, Rules(), Nothing())) == ["p[a]", "p[b]"]
    assert list(autogroup(g, Rules(), Everything())) == ["merged[a,b]"]
    assert list(autogroup(g, Rules(), GreedyGrouper())) == ["merged[a,b]"]


def test_a_grouper_that_merges_reachable_vertices_is_refused_naming_it() -> None:
    g: Graph[Any] = Graph()
    g.add(P("a"))
    g.add(P("b"))
    g.add(P("c"), require=["p[a]"], before=["p[b]"])
    with pytest.raises(ValueError, match="grouper Everything merged vertices that reach each"):
        autogroup(g, Rules(), Everything())


# -- through prepare, with real resources --------------------------------------------------


def test_noops_group_with_noops_only() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("b"))
    g.add(Exec("x", cmd=["true"]))
    g.add(Noop("a"))
    result = prepare(g)
    assert list(result) == ["autogroup[noop:a,b]", "exec[x]"]
    group = result["autogroup[noop:a,b]"]
    assert isinstance(group, Group)
    assert [m.id for m in group.members] == ["noop[a]", "noop[b]"]


def test_autogroup_false_keeps_a_resource_out() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("a"))
    g.add(Noop("b"))
    g.add(Noop("c", meta=Meta(autogroup=False)))
    assert sorted(prepare(g)) == ["autogroup[noop:a,b]", "noop[c]"]


def test_resources_with_different_meta_parameters_do_not_group() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("a"))
    g.add(Noop("b", meta=Meta(noop=True)))
    g.add(Noop("c", meta=Meta(noop=True)))
    assert sorted(prepare(g)) == ["autogroup[noop:b,c]", "noop[a]"]


def test_semaphores_of_grouped_members_are_unioned() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Noop("a", meta=Meta(sema=["disk", "net:2"])))
    g.add(Noop("b", meta=Meta(sema=["net:2", "cpu"])))
    g.add(Noop("c"))
    (group,) = prepare(g).vertices.values()
    assert sorted(group.meta.sema) == ["cpu", "disk", "net:2"]


def test_prepare_runs_autoedges_before_grouping() -> None:
    # The two noops would group, but noop[b] is reached from noop[a] only through
    # automatic edges: a -> file[/t] -> file[/t/x] -> b.
    g: Graph[Resource[Any]] = Graph()
    from convergent.resources.file import File

    g.add(Noop("a"), before=["file[/t]"])
    g.add(File("/t", state="directory"))
    g.add(File("/t/x"), before=["noop[b]"])
    g.add(Noop("b"))
    result = prepare(g)
    assert "noop[a]" in result and "noop[b]" in result
    assert result.reachable("noop[a]", "noop[b]")
