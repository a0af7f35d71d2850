"""Graph invariants: identity, cycles named whole, order, reachability, DOT."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from convergent.errors import CycleError, MissingVertexError
from convergent.graph import Graph, format_id, parse_ref, to_dot


@dataclass(frozen=True)
class V:
    kind: str
    name: str

    @property
    def id(self) -> str:
        return format_id(self.kind, self.name)


def test_identity_round_trips_through_kind_and_name() -> None:
    assert format_id("file", "/etc/motd") == "file[/etc/motd]"
    assert parse_ref("file[/etc/motd]") == ("file", "/etc/motd")
    assert parse_ref("exec[a[1]]") == ("exec", "a[1]")


@pytest.mark.parametrize("bad", ["file", "file/a", "[a]", "File[a]", "file[]"])
def test_malformed_reference_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(ValueError, match=r"kind\[name\]"):
        parse_ref(bad)


def test_cycle_error_names_the_whole_cycle_in_edge_direction() -> None:
    g: Graph[V] = Graph()
    g.add(V("file", "/a"), before=["exec[b]"])
    g.add(V("exec", "b"), before=["file[/a]"])
    g.add(V("noop", "outside"), require=["file[/a]"])
    with pytest.raises(CycleError) as info:
        g.validate()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"file[/a]", "exec[b]"}
    text = str(info.value)
    assert "file[/a] -> exec[b] -> file[/a]" in text or "exec[b] -> file[/a] -> exec[b]" in text
    for a, b in itertools.pairwise(cycle):
        assert g.edge(a, b) is not None, f"{a} -> {b} is not an edge"


def test_three_vertex_cycle_is_reported_with_every_member() -> None:
    g: Graph[V] = Graph()
    for name, nxt in [("a", "b"), ("b", "c"), ("c", "a")]:
        g.add(V("noop", name), before=[f"noop[{nxt}]"])
    cycle = g.find_cycle()
    assert cycle is not None and len(cycle) == 4 and set(cycle) == {"noop[a]", "noop[b]", "noop[c]"}


def test_topological_order_puts_every_vertex_after_its_upstream() -> None:
    g: Graph[V] = Graph()
    vs = [V("noop", str(i)) for i in range(50)]
    for i, v in enumerate(vs):
        g.add(v, require=[vs[j] for j in range(i) if (i * 7 + j) % 5 == 0])
    order = g.topological_order()
    pos = {vid: i for i, vid in enumerate(order)}
    assert len(order) == 50
    for edge in g.edges():
        assert pos[edge.source] < pos[edge.target]


def test_edge_to_missing_vertex_is_named() -> None:
    g: Graph[V] = Graph()
    g.add(V("exec", "build"), require=["file[/nope]"])
    with pytest.raises(MissingVertexError, match=r"exec\[build\]: refers to file\[/nope\]"):
        g.validate()


def test_duplicate_identity_is_rejected() -> None:
    g: Graph[V] = Graph()
    g.add(V("noop", "a"))
    with pytest.raises(ValueError, match=r"noop\[a\] is already in the graph"):
        g.add(V("noop", "a"))


def test_reachability_follows_edges_transitively_and_one_way() -> None:
    g: Graph[V] = Graph()
    a, b, c, d = (g.add(V("noop", n)) for n in "abcd")
    g.add_edge(a.id, b.id)
    g.add_edge(b.id, c.id)
    assert g.reachable(a.id, c.id)
    assert not g.reachable(c.id, a.id)
    assert not g.reachable(a.id, d.id)
    assert not g.reachable(a.id, a.id)
    assert g.descendants(a.id) == {b.id, c.id}


def test_adding_an_edge_again_only_turns_notify_on() -> None:
    g: Graph[V] = Graph()
    g.add(V("noop", "a"), notify=["noop[b]"])
    g.add(V("noop", "b"), require=["noop[a]"])
    edge = g.edge("noop[a]", "noop[b]")
    assert edge is not None and edge.notify
    assert len(list(g.edges())) == 1


def test_dot_output_has_every_vertex_and_edge_with_notify_marked() -> None:
    g: Graph[V] = Graph()
    g.add(V("file", '/tmp/"q"'))
    g.add(V("exec", "build"), require=['file[/tmp/"q"]'], notify=["noop[done]"])
    g.add(V("noop", "done"))
    dot = to_dot(g)
    assert dot.startswith('digraph "convergent" {')
    assert '"file[/tmp/\\"q\\"]" -> "exec[build]";' in dot
    assert '"exec[build]" -> "noop[done]" [style=dashed, label="notify"];' in dot
    assert '"noop[done]";' in dot


def test_dot_export_never_passes_a_control_character_on() -> None:
    g: Graph[V] = Graph()
    g.add(V("file", "/a\nfile[/etc/passwd]: removed"))
    g.add(V("file", "/b\x1b[31m\u202e"), require=["file[/a\nfile[/etc/passwd]: removed]"])
    dot = to_dot(g)
    assert all(c.isprintable() for line in dot.splitlines() for c in line)
    assert len(dot.splitlines()) == 7  # header lines, two vertices, one edge, the end
    assert '"file[/a\\\\x0afile[/etc/passwd]: removed]"' in dot
    assert "\\\\x1b[31m\\\\u202e" in dot


def test_a_copy_and_its_original_never_see_each_others_new_vertices() -> None:
    """copy_graph shares the vertex dict until one of the two adds a vertex."""
    from convergent.graph.autoedge import copy_graph

    g: Graph[V] = Graph()
    g.add(V("file", "a"))
    copy = copy_graph(g)
    copy.add(V("file", "b"))
    assert list(g) == ["file[a]"] and list(copy) == ["file[a]", "file[b]"]
    again = copy_graph(g)
    g.add(V("file", "c"))
    assert list(again) == ["file[a]"] and list(g) == ["file[a]", "file[c]"]
    assert list(copy) == ["file[a]", "file[b]"]
