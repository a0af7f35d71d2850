"""Automatic edges: nearest managed ancestor, exec cwd/creates, opt-out, never a cycle."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.engine import Changed, Engine, Report
from convergent.graph import Edge, Graph
from convergent.graph.autoedge import autoedges, path_uids, plan_autoedges
from convergent.resources.base import Meta, Resource
from convergent.resources.exec import Exec
from convergent.resources.file import File
from convergent.resources.group import prepare


def edges(graph: Graph[Any]) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges()}


def files(*specs: str | tuple[str, dict[str, Any]]) -> Graph[Resource[Any]]:
    """A graph of file resources; a path ending in / is a directory."""
    g: Graph[Resource[Any]] = Graph()
    for spec in specs:
        path, extra = (spec, {}) if isinstance(spec, str) else spec
        if path.endswith("/"):
            g.add(File(path.rstrip("/") or "/", state="directory", **extra))
        else:
            g.add(File(path, **extra))
    return g


# -- the uid candidates -------------------------------------------------------------------


def test_path_uids_list_ancestors_nearest_first_lazily() -> None:
    assert list(path_uids("file:", "/a/b/c")) == ["file:/a/b", "file:/a", "file:/"]
    assert list(path_uids("file:", "/a/b", inclusive=True)) == ["file:/a/b", "file:/a", "file:/"]
    assert list(path_uids("file:", "/")) == []
    uids = path_uids("file:", "/a/b/c")
    assert len(uids) == 3
    assert uids[0] == "file:/a/b"
    assert uids[-1] == "file:/"


# -- files --------------------------------------------------------------------------------


def test_file_depends_on_its_nearest_managed_ancestor_only() -> None:
    g = files("/t/a/b/c", "/t/", "/t/a/", "/")
    result = autoedges(g)
    assert edges(result) == {
        ("file[/]", "file[/t]"),
        ("file[/t]", "file[/t/a]"),
        ("file[/t/a]", "file[/t/a/b/c]"),  # /t/a/b is not managed: the next one up is
    }


def test_a_file_without_a_managed_ancestor_gets_no_edge() -> None:
    assert edges(autoedges(files("/t/a", "/u/b", "/v/"))) == set()


def test_autoedges_leave_the_input_graph_alone() -> None:
    g = files("/t/", "/t/a")
    autoedges(g)
    assert edges(g) == set()


def _chain(depth: int) -> list[str]:
    path, out = "/t", ["/t/"]
    for i in range(depth):
        path += f"/d{i}"
        out.append(path + "/")
    return out


def _wide(width: int) -> list[str]:
    out = ["/t/"]
    for i in range(width):
        out.append(f"/t/d{i}/")
        out.extend(f"/t/d{i}/f{j}" for j in range(5))
    return out


def test_a_deep_chain_gets_one_edge_per_level_whatever_the_order() -> None:
    paths = _chain(300)
    for order in (paths, paths[::-1]):
        result = autoedges(files(*order))
        ids = [f"file[{p.rstrip('/')}]" for p in paths]
        expected = set(itertools.pairwise(ids))
        assert edges(result) == expected


def test_a_wide_tree_gets_one_edge_per_file_to_its_directory() -> None:
    paths = _wide(100)
    result = autoedges(files(*paths[::-1]))
    assert len(edges(result)) == len(paths) - 1
    assert ("file[/t/d7]", "file[/t/d7/f3]") in edges(result)
    assert ("file[/t]", "file[/t/d7]") in edges(result)
    assert not any(s == "file[/t]" and t.count("/") == 3 for s, t in edges(result))


# -- exec ---------------------------------------------------------------------------------


def test_exec_depends_on_the_managed_directory_at_or_above_its_cwd() -> None:
    g = files("/srv/", "/srv/app/")
    g.add(Exec("build", cmd=["make"], cwd="/srv/app"))
    g.add(Exec("list", cmd=["ls"], cwd="/srv/app/sub//"))
    result = autoedges(g)
    assert ("file[/srv/app]", "exec[build]") in edges(result)
    assert ("file[/srv/app]", "exec[list]") in edges(result)
    assert ("file[/srv]", "exec[build]") not in edges(result)


def test_exec_creates_comes_after_the_directory_and_before_the_file_it_creates() -> None:
    g = files("/srv/", "/srv/repo/", "/srv/repo/config", "/srv/other")
    g.add(Exec("clone", cmd=["git", "clone", "x", "/srv/repo"], creates="/srv/repo"))
    result = autoedges(g)
    assert ("file[/srv]", "exec[clone]") in edges(result)
    assert ("exec[clone]", "file[/srv/repo]") in edges(result)  # the command makes it first
    assert ("exec[clone]", "file[/srv/repo/config]") in edges(result)
    assert ("file[/srv/repo]", "file[/srv/repo/config]") in edges(result)
    assert ("exec[clone]", "file[/srv/other]") not in edges(result)
    assert ("file[/srv/repo]", "exec[clone]") not in edges(result)


# -- opting out, explicit edges, cycles -------------------------------------------------


def test_autoedge_false_neither_gets_nor_gives_automatic_edges() -> None:
    off = Meta(autoedge=False)
    g = files("/t/", ("/t/a/", {"meta": off}), "/t/a/b", ("/u/", {"meta": off}), "/u/c")
    g.add(File("/t/x"), require=["file[/t/a]"])  # explicit edges stay
    result = autoedges(g)
    assert ("file[/t]", "file[/t/a]") not in edges(result)  # gets none
    assert ("file[/t/a]", "file[/t/a/b]") not in edges(result)  # gives none: the next up does
    assert ("file[/t]", "file[/t/a/b]") in edges(result)
    assert ("file[/u]", "file[/u/c]") not in edges(result)
    assert ("file[/t/a]", "file[/t/x]") in edges(result)


def test_an_autoedge_that_would_close_a_cycle_is_skipped_so_explicit_edges_win() -> None:
    g = files("/t/a")
    g.add(File("/t", state="directory"), require=["file[/t/a]"])
    plan = plan_autoedges(g)
    assert plan.added == []
    assert plan.skipped == [Edge("file[/t]", "file[/t/a]")]
    result = autoedges(g)
    assert edges(result) == {("file[/t/a]", "file[/t]")}
    assert result.find_cycle() is None


def test_among_automatic_edges_that_form_a_cycle_the_first_one_wins() -> None:
    g: Graph[Resource[Any]] = Graph()
    g.add(Exec("init", cmd=["true"], cwd="/x", creates="/x"))
    g.add(File("/x", state="directory"))
    result = autoedges(g)
    assert edges(result) == {("file[/x]", "exec[init]")}  # exec[init] is first and needs /x


def test_an_existing_edge_is_not_duplicated_and_keeps_its_notify() -> None:
    g = files("/t/a")
    g.add(File("/t", state="directory"), notify=["file[/t/a]"])
    plan = plan_autoedges(g)
    assert plan.added == []
    edge = autoedges(g).edge("file[/t]", "file[/t/a]")
    assert edge is not None and edge.notify


# -- the mechanism, on plain payloads ------------------------------------------------------


@dataclass
class V:
    """A payload with the AutoEdges ability and nothing else."""

    name: str
    gives: list[str] = field(default_factory=list)
    wants: list[list[str]] = field(default_factory=list)
    meta: Any = None

    @property
    def id(self) -> str:
        return f"v[{self.name}]"

    def provides(self) -> Sequence[str]:
        return self.gives

    def needs(self) -> Sequence[Sequence[str]]:
        return self.wants


def test_each_provider_of_the_first_provided_candidate_gets_an_edge_but_never_itself() -> None:
    g: Graph[V] = Graph()
    g.add(V("a", gives=["u:1"]))
    g.add(V("b", gives=["u:1"]))
    g.add(V("c", gives=["u:2"]))
    g.add(V("n", gives=["u:0"], wants=[["u:0", "u:1", "u:2"], ["u:2"]]))
    assert edges(autoedges(g)) == {("v[a]", "v[n]"), ("v[b]", "v[n]"), ("v[c]", "v[n]")}


def _providers(g: Graph[V]) -> dict[str, set[str]]:
    """Every uid given in ``g`` -> the vertices that give it."""
    providers: dict[str, set[str]] = {}
    for v in g.vertices.values():
        for uid in v.gives:
            providers.setdefault(uid, set()).add(v.id)
    return providers


@st.composite
def payload_graphs(draw: st.DrawFn) -> Graph[V]:
    n = draw(st.integers(2, 12))
    uids = [f"u:{i}" for i in range(6)]
    g: Graph[V] = Graph()
    for i in range(n):
        gives = draw(st.lists(st.sampled_from(uids), max_size=2, unique=True))
        wants = draw(st.lists(st.lists(st.sampled_from(uids), min_size=1, max_size=3), max_size=2))
        g.add(V(str(i), gives, wants))
    rank = draw(st.permutations(range(n)))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=n))
    for a, b in pairs:
        if rank[a] < rank[b]:
            g.add_edge(f"v[{a}]", f"v[{b}]", notify=(a + b) % 2 == 0)
    return g


@settings(max_examples=300, deadline=None)
@given(payload_graphs())
def test_autoedges_never_make_a_cycle_and_follow_the_first_provided_candidate(
    g: Graph[V],
) -> None:
    plan = plan_autoedges(g)
    result = autoedges(g)
    assert result.find_cycle() is None
    explicit = set(g.edges())
    assert explicit <= set(result.edges())  # explicit edges are kept, notify included
    providers = _providers(g)
    expected: set[tuple[str, str]] = set()
    for v in g.vertices.values():
        for group in v.wants:
            for uid in group:
                others = providers.get(uid, set()) - {v.id}
                if others:
                    expected |= {(p, v.id) for p in others}
                    break
    wanted = expected - {(e.source, e.target) for e in explicit}
    added = {(e.source, e.target) for e in plan.added}
    skipped = {(e.source, e.target) for e in plan.skipped}
    assert added | skipped == wanted
    assert not added & skipped
    for source, target in skipped:  # skipped only because it would have closed a cycle
        assert result.reachable(target, source)


@st.composite
def file_trees(draw: st.DrawFn) -> tuple[Graph[Resource[Any]], set[str]]:
    names = st.sampled_from(["a", "b", "c"])
    paths = draw(st.sets(st.lists(names, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))))
    paths |= {"/"} if draw(st.booleans()) else set()
    off = draw(st.sets(st.sampled_from(sorted(paths)))) if paths else set()
    g: Graph[Resource[Any]] = Graph()
    for path in draw(st.permutations(sorted(paths))):
        meta = Meta(autoedge=False) if path in off else None
        g.add(File(path, state="directory", meta=meta))
    return g, {p for p in paths if p not in off}


@settings(max_examples=200, deadline=None)
@given(file_trees())
def test_every_file_depends_exactly_on_its_nearest_managed_ancestor(
    tree: tuple[Graph[Resource[Any]], set[str]],
) -> None:
    g, enabled = tree
    result = autoedges(g)
    expected = set()
    for path in enabled:
        for ancestor in path_uids("", path):
            if ancestor in enabled:
                expected.add((f"file[{ancestor}]", f"file[{path}]"))
                break
    assert edges(result) == expected


# -- through the engine -------------------------------------------------------------------


def test_prepared_graph_creates_the_directory_before_the_command_that_runs_in_it(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    g: Graph[Resource[Any]] = Graph()
    g.add(Exec("build", cmd=["touch", "out"], cwd=str(work), creates=str(work / "out")))
    g.add(File(str(work / "out"), mode="0600"))
    g.add(File(str(work), state="directory", mode="0700"))
    reports: list[Report] = []

    async def main() -> None:
        engine = Engine(prepare(g), converged_timeout=0, reporter=reports.append)
        result = await asyncio.wait_for(engine.run(), 10)
        assert result.exit_code == 0

    asyncio.run(main())
    changed = [r.resource for r in reports if isinstance(r, Changed)]
    assert changed == [f"file[{work}]", "exec[build]", f"file[{work / 'out'}]"]
    assert (work / "out").stat().st_mode & 0o777 == 0o600


@st.composite
def path_payload_graphs(draw: st.DrawFn) -> Graph[V]:
    """Payloads that need the ancestors of a path (``path_uids``, inclusive or not) and
    provide paths, their own ancestors included, several providers to a uid."""
    names = st.sampled_from(["a", "b", "c"])
    path = st.lists(names, min_size=0, max_size=4).map(lambda p: "/" + "/".join(p))
    g: Graph[V] = Graph()
    for i in range(draw(st.integers(1, 14))):
        gives = sorted(draw(st.sets(path.map(lambda p: "p:" + p), max_size=2)))
        wants: list[Any] = [
            path_uids(
                draw(st.sampled_from(["p:", "q:"])), draw(path), inclusive=draw(st.booleans())
            )
            for _ in range(draw(st.integers(0, 2)))
        ]
        g.add(V(str(i), gives, wants))
    return g


@settings(max_examples=300, deadline=None)
@given(path_payload_graphs())
def test_path_groups_follow_the_first_provided_ancestor_like_any_group(g: Graph[V]) -> None:
    """A path group is walked once per directory, with the same edges as reading it whole."""
    providers = _providers(g)
    expected: set[tuple[str, str]] = set()
    for v in g.vertices.values():
        for group in v.wants:
            for uid in list(group):
                others = providers.get(uid, set()) - {v.id}
                if others:
                    expected |= {(p, v.id) for p in others}
                    break
    plan = plan_autoedges(g)
    assert {(e.source, e.target) for e in plan.added + plan.skipped} == expected


def test_the_cache_answers_a_path_kind_with_equal_uids_without_asking_again() -> None:
    """A file's uids are kept compactly (its uid and prefix length) and rebuilt equal."""
    from convergent.graph.autoedge import AutoEdgeCache, vertex_uids
    from convergent.resources.base import convert_params, get_kind

    cls = get_kind("file")
    assert cls is not None
    owned = cls("/srv/a/b", convert_params(cls.params_type, {"owner": "root"}))
    plain = cls("/srv/a/c", convert_params(cls.params_type, {}))
    cache = AutoEdgeCache()
    for resource in (owned, plain):
        first = cache.get(resource.id, resource)
        again = cache.get(resource.id, resource)
        fresh = vertex_uids(resource)
        assert first is not None and again is not None and fresh is not None
        for uids in (first, again):
            assert uids[0] == fresh[0]
            assert [list(group) for group in uids[1]] == [list(group) for group in fresh[1]]
    assert [list(g) for g in cache.get(plain.id, plain)[1]] == [  # type: ignore[index]
        ["file:/srv/a/c"],
        ["file:/srv/a", "file:/srv", "file:/"],
    ]
