"""The member maps of a running plan (``engine/vertexmap.py``) answer as the dicts they
replace did: every member of a group maps to its group vertex, every other vertex to
itself, nothing else maps, and the order is the graph's."""

from __future__ import annotations

from typing import Any

from convergent.engine.changeover import Plan
from convergent.engine.vertexmap import MemberView
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.resources.group import Group
from tests.engine.probe import Box, Probe


class Grouped(Probe, kind="mapgrouped"):
    """A probe that autogroups with its own kind."""

    def can_group(self, other: Resource[Any]) -> bool:
        return isinstance(other, Grouped)


class _Runs:
    def __init__(self, resource: Resource[Any]) -> None:
        self.resource = resource


def _plan() -> Plan:
    box = Box()
    graph: Graph[Resource[Any]] = Graph()
    for probe in (Grouped("a"), Probe("x"), Grouped("b"), Probe("y")):
        probe.box = box
        graph.add(probe)
    return Plan(graph)


def _expected(plan: Plan) -> dict[str, str]:
    """The dict Plan.vertex_of used to be."""
    found: dict[str, str] = {}
    for vid, payload in plan.graph.vertices.items():
        if isinstance(payload, Group):
            for member in payload.members:
                found[member.id] = vid
        else:
            found[vid] = vid
    return found


def test_vertex_of_reads_as_the_member_to_vertex_dict() -> None:
    plan = _plan()
    group = next(v for v, p in plan.graph.vertices.items() if isinstance(p, Group))
    expected = _expected(plan)
    assert expected["mapgrouped[a]"] == group and expected["probe[x]"] == "probe[x]"
    assert dict(plan.vertex_of) == expected
    assert list(plan.vertex_of) == list(expected)
    assert len(plan.vertex_of) == len(expected) == 4
    assert plan.vertex_of.get(group) is None  # a group vertex is no member
    assert plan.vertex_of.get("probe[z]", "probe[z]") == "probe[z]"
    assert "mapgrouped[b]" in plan.vertex_of and "probe[z]" not in plan.vertex_of


def test_member_view_reads_as_the_member_to_resource_dict() -> None:
    plan = _plan()
    workers = {vid: _Runs(payload) for vid, payload in plan.graph.vertices.items()}
    view = MemberView(workers)
    expected = {m.id: m for w in workers.values() for m in _members(w.resource)}
    assert dict(view) == expected
    assert list(view) == list(expected)
    assert len(view) == 4
    assert view["mapgrouped[b]"] is expected["mapgrouped[b]"]
    assert view.get("probe[z]") is None
    assert next(v for v in workers if v.startswith("autogroup")) not in view


def _members(resource: Resource[Any]) -> tuple[Resource[Any], ...]:
    return resource.members if isinstance(resource, Group) else (resource,)
