"""Teardown: a policy's resources in their absent forms, in reverse dependency order.

``convergent destroy`` runs the graph :func:`teardown` makes with the ordinary engine
(``--converged-timeout 0``): every vertex is the absent form of a resource of the policy
(the ``Destroyable`` ability: a file removed, a process stopped, a package removed), and
every edge is a dependency of the policy turned around, its automatic edges included (a
file inside a directory goes before the directory, a file owned by a user before the
user). What the reversed graph leaves independent runs in parallel; noop, reports,
retries, timeouts and semaphores are the engine's, as in a run.

A resource is *left alone*, and named with the reason in :attr:`Teardown.left`, when its
kind has no absent state (``exec``, ``timer``, ``password``...), when it says
``destroy: keep`` (or its kind keeps by default, packages and accounts, and it does not
say ``destroy: remove``), when its declared state is already absent, or when it is
exported (it is applied on the hosts that collect it). A resource left alone keeps the
order it stood for: the edges through it are carried over, so in ``a -> exec[x] -> b``
``b`` is still removed before ``a``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

import msgspec

from convergent.graph.autoedge import autoedges
from convergent.graph.core import Graph
from convergent.resources.abilities import Destroyable
from convergent.resources.base import Resource

__all__ = ["Left", "Teardown", "select", "teardown"]


class Left(NamedTuple):
    """A resource destroy leaves as it is, and why."""

    resource: str
    reason: str


class Teardown(NamedTuple):
    """What destroy runs: ``graph`` (absent forms, edges reversed), what it leaves alone,
    and the identity each destroyed resource has in ``graph`` (a download is removed as
    ``file[PATH]``)."""

    graph: Graph[Resource[Any]]
    left: tuple[Left, ...]
    forms: dict[str, str]


def select(clusters: Mapping[str, Iterable[str]], names: Iterable[str]) -> set[str]:
    """The vertices of the bundle uses ``names`` name: ``webserver`` (every use of that
    bundle) or ``webserver[main]`` (one use), as ``Graph.clusters`` keys them.

    Raises ValueError naming the unknown ones and listing the policy's bundle uses.
    """
    chosen: set[str] = set()
    unknown: list[str] = []
    for name in names:
        found = [
            use for use in clusters if use == name or ("[" not in name and _bundle(use) == name)
        ]
        if not found:
            unknown.append(name)
        for use in found:
            chosen.update(clusters[use])
    if unknown:
        uses = ", ".join(sorted(clusters)) or "none: the policy uses no bundle"
        raise ValueError(
            f"no bundle use named {', '.join(unknown)}; give a bundle (webserver) or one of "
            f"its uses (webserver[main]); the policy's bundle uses: {uses}"
        )
    return chosen


def _bundle(use: str) -> str:
    return use.partition("[")[0]


def teardown(graph: Graph[Resource[Any]], selected: Collection[str] | None = None) -> Teardown:
    """The teardown of ``graph`` (of the vertices in ``selected``, None: all of them).

    ``graph`` is not changed. Raises what ``Graph.validate`` raises for a graph that is
    not valid (the loader refuses those before).
    """
    full = autoedges(graph)  # the order a run follows, the written edges and the automatic
    forms: dict[str, Resource[Any]] = {}  # policy id -> absent form
    left: list[Left] = []
    for vid, resource in full.vertices.items():
        if selected is not None and vid not in selected:
            continue
        form, reason = _absent(resource)
        if form is None:
            left.append(Left(vid, reason))
        else:
            forms[vid] = form
    result: Graph[Resource[Any]] = Graph()
    result.secrets = graph.secrets  # hidden from the reports of the teardown too
    ids: dict[str, str] = {}
    for vid, form in forms.items():
        ids[vid] = form.id
        if form.id not in result:  # two resources may remove one path (download, file)
            result.add(form)
    for vid in forms:
        for later in _next_destroyed(full, vid, forms):
            if ids[later] != ids[vid]:
                result.add_edge(ids[later], ids[vid])  # turned around: the later one first
    result.validate()
    return Teardown(result, tuple(left), ids)


def _absent(resource: Resource[Any]) -> tuple[Resource[Any] | None, str]:
    """The absent form of ``resource``, or None and why it is left alone."""
    kind = resource.kind
    meta = resource.meta
    if meta.export:
        return None, "exported: it is applied, and destroyed, where it is collected"
    if not isinstance(resource, Destroyable):
        return None, f"{kind} has no absent state"
    choice = meta.destroy
    if choice == "keep":
        return None, "kept: the policy says destroy: keep"
    if choice is None and resource.destroy_default == "keep":
        return None, f"kept: a {kind} is removed only when its entry says destroy: remove"
    form = resource.absent(choice == "remove")
    if form is None:
        return None, "nothing to remove: the policy wants it absent already"
    form.meta = msgspec.structs.replace(form.meta, autoedge=False, reverse=False, export=False)
    return form, ""


def _next_destroyed(
    graph: Graph[Resource[Any]], vid: str, destroyed: Mapping[str, Any]
) -> set[str]:
    """The destroyed vertices that follow ``vid`` in ``graph`` with no destroyed vertex in
    between (the path may go through vertices left alone)."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = deque(graph.downstream(vid))
    while todo:
        v = todo.popleft()
        if v in seen:
            continue
        seen.add(v)
        if v in destroyed:
            found.add(v)
        else:
            todo.extend(graph.downstream(v))
    return found
