"""What ``convergent invoke`` runs: some bundle uses of a policy and what they require.

:func:`part` cuts the graph down to the vertices of the chosen bundle uses
(``Graph.clusters``) and every vertex they depend on, the automatic edges included (a
file of the bundle in a directory the policy manages elsewhere brings that directory);
the engine then runs it as any graph, in dependency order. :class:`Prediction` counts
what a dry run (noop) says: the resources that would change, and those that *may*
change because they come after one that would (a noop checks them against today's
state, which the change before them would alter) or could not be checked yet.
:func:`fingerprint` names one run exactly: the same policy file, invocation, methods,
switches and resources give the same hash.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import msgspec

from convergent.engine.report import Log, Report, WouldChange
from convergent.graph.autoedge import autoedges
from convergent.graph.core import Graph
from convergent.resources.base import Resource

__all__ = ["Prediction", "fingerprint", "part", "uses_of"]


def uses_of(clusters: Mapping[str, Iterable[str]], methods: Collection[str]) -> set[str]:
    """The vertices of every use of the bundles ``methods``."""
    found: set[str] = set()
    for use, vertices in clusters.items():
        if use.partition("[")[0] in methods:
            found.update(vertices)
    return found


def part(graph: Graph[Resource[Any]], chosen: Collection[str]) -> Graph[Resource[Any]]:
    """``graph`` cut down to ``chosen`` and everything they depend on (written and
    automatic edges), with the written edges among them. ``graph`` is not changed."""
    full = autoedges(graph)
    keep: set[str] = set()
    todo = deque(v for v in chosen if v in full)
    while todo:
        vid = todo.popleft()
        if vid in keep:
            continue
        keep.add(vid)
        todo.extend(full.upstream(vid))
    result: Graph[Resource[Any]] = Graph()
    for vid, resource in graph.vertices.items():
        if vid in keep:
            result.add(resource)
    for edge in graph.edges():
        if edge.source in keep and edge.target in keep:
            result.add_edge(edge.source, edge.target, notify=edge.notify, recv=dict(edge.recv))
    result.clusters = {use: vs for use, vs in graph.clusters.items() if all(v in keep for v in vs)}
    result.secrets = graph.secrets
    result.held = {vid: params for vid, params in graph.held.items() if vid in keep}
    result.validate()
    return result


def fingerprint(
    policy_text: bytes,
    invocation: str,
    methods: Iterable[str],
    switches: Mapping[str, Any],
    graph: Graph[Resource[Any]],
) -> str:
    """SHA-256 of everything that makes one run what it is (hex)."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(policy_text).digest())
    body = {
        "invocation": invocation,
        "methods": sorted(methods),
        "switches": {k: switches[k] for k in sorted(switches)},
        "resources": [[vid, _params(resource)] for vid, resource in sorted(graph.vertices.items())],
        "edges": sorted([e.source, e.target, e.notify] for e in graph.edges()),
    }
    digest.update(msgspec.json.encode(body, enc_hook=repr))
    return digest.hexdigest()


def _params(resource: Resource[Any]) -> Any:
    return [msgspec.to_builtins(resource.params, enc_hook=repr), resource.kind]


class Prediction:
    """A reporter that counts what a dry run says would change (see the module docstring).

    Pass it the reports (``prediction(report)``), then read :meth:`counts`.
    """

    def __init__(self, graph: Graph[Resource[Any]]) -> None:
        self.graph = autoedges(graph)
        self.would: set[str] = set()
        self.unchecked: set[str] = set()

    def __call__(self, report: Report) -> None:
        if isinstance(report, WouldChange):
            change = report.change
            if change is not None and change.members:
                self.would.update(change.members)
            else:
                self.would.add(report.resource)
        elif isinstance(report, Log) and report.message.startswith("not checked"):
            self.unchecked.add(report.resource)

    def may(self) -> set[str]:
        """The resources that may change: after one that would, or not checked."""
        after: set[str] = set()
        for vid in self.would:
            if vid in self.graph:
                after.update(self.graph.descendants(vid))
        return (after | self.unchecked) - self.would

    def counts(self) -> tuple[int, int]:
        """``(would change, may change)``."""
        return len(self.would), len(self.may())
