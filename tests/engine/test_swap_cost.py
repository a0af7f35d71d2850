"""A collection swap costs what changed: adding k collected files to a graph of n files
asks the automatic edge step (``vertex_uids``) of the k new vertices only, and the plan it
makes is the one a fresh preparation of the whole graph makes (same edges, same groups).
Counted calls, not timings (speed figures live in bench/exchange.py)."""

from __future__ import annotations

from typing import Any

import pytest

from convergent.engine.changeover import Plan, plan_swap
from convergent.graph import Graph, autoedge
from convergent.resources.base import Resource, convert_params, get_kind


def _file(path: str, **params: Any) -> Resource[Any]:
    cls = get_kind("file")
    assert cls is not None
    return cls(path, convert_params(cls.params_type, {"path": path, **params}))


def _graph(resources: list[Resource[Any]]) -> Graph[Resource[Any]]:
    graph: Graph[Resource[Any]] = Graph()
    for resource in resources:
        graph.add(resource)
    return graph


def _edges(plan: Plan) -> set[tuple[str, str, bool]]:
    return {(e.source, e.target, e.notify) for e in plan.graph.edges()}


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The identities the per-vertex autoedge step was asked about, in order."""
    asked: list[str] = []
    step = autoedge.vertex_uids

    def counting(payload: Any) -> Any:
        asked.append(payload.id)
        return step(payload)

    monkeypatch.setattr(autoedge, "vertex_uids", counting)
    return asked


@pytest.mark.parametrize(("n", "k"), [(50, 1), (500, 10), (500, 40)])
def test_a_swap_adding_k_files_asks_the_autoedge_step_k_times(
    counted: list[str], n: int, k: int
) -> None:
    own = [_file("/srv/x", state="directory")]
    own += [_file(f"/srv/x/f{i}", content=f"{i}\n") for i in range(n)]
    old = Plan(_graph(own))
    assert len(counted) == n + 1
    counted.clear()
    added = [_file(f"/srv/x/g{i}", content=f"{i}\n") for i in range(k)]
    new = _graph(own + added)
    done, plan, _ = plan_swap(old, new, dict(old.source.vertices), {})
    assert sorted(done.added) == sorted(r.id for r in added)
    assert sorted(counted) == sorted(r.id for r in added)  # k calls, none for the n kept
    fresh = Plan(_graph(own + added))
    assert _edges(plan) == _edges(fresh)
    assert ("file[/srv/x]", "file[/srv/x/g0]", False) in _edges(plan)


def test_a_removed_file_leaves_its_edges_and_nothing_else_is_asked_again(
    counted: list[str],
) -> None:
    own = [_file("/srv/y", state="directory")] + [_file(f"/srv/y/f{i}") for i in range(20)]
    old = Plan(_graph(own))
    counted.clear()
    _, plan, _ = plan_swap(old, _graph(own[:-1]), dict(old.source.vertices), {})
    assert counted == []
    assert "file[/srv/y/f19]" not in plan.graph
    assert _edges(plan) == _edges(Plan(_graph(own[:-1])))


def test_a_replaced_resource_object_is_asked_again(counted: list[str]) -> None:
    """A vertex whose resource changed (a new object: an export was rewritten) is asked
    again, so its new path's edges follow."""
    own = [_file("/srv/z", state="directory"), _file("/srv/w", state="directory")]
    moved = _file("/srv/z/a", content="1\n")
    old = Plan(_graph([*own, moved]))
    counted.clear()
    again = _file("/srv/z/a", content="2\n")
    done, plan, _ = plan_swap(old, _graph([*own, again]), dict(old.source.vertices), {})
    assert done.changed == ["file[/srv/z/a]"]
    assert counted == ["file[/srv/z/a]"]
    assert ("file[/srv/z]", "file[/srv/z/a]", False) in _edges(plan)
