"""Automatic edges: resources say which uids they provide and need; edges follow.

A uid names a thing on the host as ``namespace:value`` (``file:/etc/app``). A vertex
payload takes part when it has the two methods of the ``AutoEdges`` ability:

- ``provides()``: the uids it manages;
- ``needs()``: groups of candidate uids, nearest first. For each group, the first
  candidate that some *other* vertex provides wins: one edge from each of its providers
  to the needer. So a file comes after its nearest managed ancestor directory, not after
  every ancestor. Groups are read lazily (:func:`path_uids`), so a deep tree costs one
  dict lookup per level actually walked, never a scan of the graph.

Edges always run provider -> needer. A kind that must come *before* what it provides
(a package before the files it ships, a command before the path it ``creates``) says so
by providing the uid, and ``file`` needs its own path's uid first (then its ancestors).
The graph layer imports no resource: the methods and ``meta.autoedge`` are looked up by
name.

``meta: {autoedge: false}`` takes a resource out both ways, as in mgmt: it gets no
automatic edge and gives none (its ``provides()`` are not seen). Its explicit edges stay.

An automatic edge never closes a cycle: one that would is skipped, so explicit edges win,
and among automatic edges the earlier one (vertex order, then group order) wins. An edge
that already exists is not added again (an explicit ``notify`` stays as it is).

A graph that changes a little at a time (the engine's live changeover, collected
resources arriving) passes an :class:`AutoEdgeCache`: each vertex's ``provides()`` and
``needs()`` are asked once (:func:`vertex_uids`) and reused while the vertex holds the same
payload object, so preparing a graph that gained k vertices asks only those k.
"""

from __future__ import annotations

import graphlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

from convergent.graph.core import Edge, Graph, Identified

__all__ = [
    "AutoEdgeCache",
    "AutoEdgePlan",
    "autoedges",
    "copy_graph",
    "path_uids",
    "plan_autoedges",
    "vertex_uids",
]

T = TypeVar("T", bound=Identified)


class _PathUids(Sequence[str]):
    """The uids of a path's ancestors (and the path itself when ``inclusive``), nearest
    first, computed as they are read."""

    __slots__ = ("_inclusive", "_items", "_path", "_prefix")

    def __init__(self, prefix: str, path: str, inclusive: bool) -> None:
        self._prefix = prefix
        self._path = path
        self._inclusive = inclusive
        self._items: list[str] | None = None

    def __iter__(self) -> Iterator[str]:
        path, prefix = self._path, self._prefix
        if self._inclusive:
            yield prefix + path
        while path != "/":
            path = path.rpartition("/")[0] or "/"
            yield prefix + path

    def __len__(self) -> int:
        ancestors = 0 if self._path == "/" else self._path.count("/")
        return ancestors + self._inclusive

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if self._items is None:
            self._items = list(self)
        return self._items[index]

    def __repr__(self) -> str:
        return f"path_uids({self._prefix!r}, {self._path!r}, inclusive={self._inclusive})"


def path_uids(prefix: str, path: str, *, inclusive: bool = False) -> Sequence[str]:
    """The uids of the ancestors of ``path``, nearest first, lazily.

    ``path_uids("file:", "/a/b")`` reads as ``["file:/a", "file:/"]``; with
    ``inclusive=True`` it starts with ``"file:/a/b"``. ``path`` must be absolute and
    normalised.
    """
    return _PathUids(prefix, path, inclusive)


class AutoEdgePlan:
    """What :func:`plan_autoedges` found: the edges to add, and those skipped because
    they would have closed a cycle (explicit edges win)."""

    __slots__ = ("added", "skipped")

    def __init__(self, added: list[Edge], skipped: list[Edge]) -> None:
        self.added = added
        self.skipped = skipped


def _enabled(payload: object) -> bool:
    return bool(getattr(getattr(payload, "meta", None), "autoedge", True))


_Uids = tuple[tuple[str, ...], Any]  # provides(), needs() (called lazily by _plan)


def vertex_uids(payload: object) -> _Uids | None:
    """The per-vertex step: what ``payload`` provides and needs, or None when it takes no
    part (no AutoEdges methods, or ``meta: {autoedge: false}``)."""
    provides = getattr(payload, "provides", None)
    needs = getattr(payload, "needs", None)
    if provides is None or needs is None or not _enabled(payload):
        return None
    provided = provides()
    if type(provided) is not tuple:
        provided = tuple(provided)
    needed = needs()
    if type(needed) is not tuple:
        needed = tuple(needed)
    if provided and provided in needed:
        # A file provides and needs ``file:PATH``: keep one tuple of it, not two.
        groups = list(needed)
        for i, group in enumerate(groups):
            if group == provided:
                groups[i] = provided
        needed = tuple(groups)
    return provided, needed


class AutoEdgeCache:
    """:func:`vertex_uids` of each vertex, kept across preparations of a changing graph;
    an entry counts only while its vertex holds the same payload object.

    The common answer of a path kind (``file``: provides ``(PREFIX + PATH,)``, needs that
    tuple then ``path_uids(PREFIX, PATH)``) is kept as the prefix and the path strings it
    already holds, and rebuilt (equal values) when asked: 64 bytes a vertex, not ~380.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def get(self, vid: str, payload: object) -> _Uids | None:
        known = self._entries.get(vid)
        if known is not None and known[0] is payload:
            return _unpack(known)
        uids = vertex_uids(payload)
        self._entries[vid] = _pack(payload, uids)
        return uids

    def keep_only(self, vids: Iterable[str]) -> None:
        """Forget the vertices not in ``vids`` (they left the graph)."""
        wanted = set(vids)
        self._entries = {v: e for v, e in self._entries.items() if v in wanted}

    def __len__(self) -> int:
        return len(self._entries)


# A cache entry: (payload, None) takes no part; (payload, prefix, path) a path kind's
# common answer (see AutoEdgeCache); (payload, provided, needed) any other.
_Entry = tuple[Any, ...]


def _pack(payload: object, uids: _Uids | None) -> _Entry:
    if uids is None:
        return (payload, None)
    provided, needed = uids
    if len(provided) == 1 and len(needed) == 2 and needed[0] is provided:
        lazy = needed[1]
        if type(lazy) is _PathUids and not lazy._inclusive:
            uid, prefix, path = provided[0], lazy._prefix, lazy._path
            same = len(uid) == len(prefix) + len(path)
            if same and uid.startswith(prefix) and uid.endswith(path):
                return (payload, prefix, path)
    return (payload, provided, needed)


def _unpack(entry: _Entry) -> _Uids | None:
    if len(entry) == 2:
        return None
    _, second, third = entry
    if type(second) is str:
        provided: tuple[str, ...] = (second + third,)
        return provided, (provided, _PathUids(second, third, False))
    return second, third


def plan_autoedges(graph: Graph[T], cache: AutoEdgeCache | None = None) -> AutoEdgePlan:
    """The automatic edges of ``graph`` (which must be valid: see ``Graph.validate``)."""
    added, skipped = _plan(graph, cache)
    return AutoEdgePlan([Edge(s, t) for s, t in added], [Edge(s, t) for s, t in skipped])


def autoedges(graph: Graph[T], cache: AutoEdgeCache | None = None) -> Graph[T]:
    """A new graph: ``graph`` with its automatic edges. ``graph`` is not changed.
    ``cache``: the vertices' uids from an earlier call (see :class:`AutoEdgeCache`)."""
    graph.validate()
    result = copy_graph(graph)
    added = _plan(graph, cache)[0]
    for source, target in added:
        result.add_edge(source, target)
    # Valid still: no dangling edge was added, and every edge that would close a cycle
    # was skipped (validate() would only walk it all again).
    result._valid = True
    if cache is not None:
        cache.keep_only(graph.vertices)
    return result


def copy_graph(graph: Graph[T]) -> Graph[T]:
    """A new graph with the same vertices (payloads shared, not copied) and edges; the
    two share one vertex dict until either adds a vertex."""
    # Copied from the inside: ``payload.id`` may be costly to rebuild, and edges are frozen.
    result: Graph[T] = Graph()
    result._vertices = graph._vertices  # shared until either adds a vertex
    result._lent = graph._lent = True
    result._out = {v: dict(targets) for v, targets in graph._out.items()}
    result._in = {v: dict(sources) for v, sources in graph._in.items()}
    result._valid = graph._valid
    return result


_Pair = tuple[str, str]


def _plan(graph: Graph[T], cache: AutoEdgeCache | None = None) -> tuple[list[_Pair], list[_Pair]]:
    # uid -> its provider, or a list of them when several (a list each was 64 bytes).
    providers: dict[str, str | list[str]] = {}
    needers: list[tuple[str, Any]] = []
    for vid, payload in graph.vertices.items():
        uids = cache.get(vid, payload) if cache is not None else vertex_uids(payload)
        if uids is None:
            continue
        for uid in uids[0]:
            known = providers.setdefault(uid, vid)
            if isinstance(known, list):
                known.append(vid)
            elif known is not vid:
                providers[uid] = [known, vid]
        needers.append((vid, uids[1]))

    wanted: list[_Pair] = []
    seen: set[_Pair] = set()
    nearest: dict[str, str] = {}  # a directory's uid -> the nearest provided at or above it
    for vid, needs in needers:
        for group in needs:
            if type(group) is _PathUids:  # the usual group: a path's ancestors
                uid = group._prefix + group._path
                if not (group._inclusive and uid in providers):
                    uid = _nearest(group._prefix, group._path, providers, nearest)
                found = providers.get(uid) if uid else None
                if found is None:
                    continue
                if found != vid:  # one provider (a str), or several (a list)
                    _want(graph, found, vid, seen, wanted)
                    continue
            for uid in group:  # any group, and a path group whose nearest is vid itself
                found = providers.get(uid)
                if found is None or found == vid:
                    continue
                _want(graph, found, vid, seen, wanted)
                break
    if not wanted:  # the graph is valid: no cycle, and none can be closed
        return wanted, []
    return _without_cycles(graph, wanted)


def _want(
    graph: Graph[T], found: str | list[str], vid: str, seen: set[_Pair], wanted: list[_Pair]
) -> None:
    """The edges from each provider in ``found`` (one, or a list) to ``vid`` (not to
    itself, not twice, not one the graph has)."""
    for source in (found,) if type(found) is str else found:
        pair = (source, vid)
        if source != vid and pair not in seen and graph.edge(source, vid) is None:
            seen.add(pair)
            wanted.append(pair)


def _nearest(
    prefix: str, path: str, providers: dict[str, str | list[str]], known: dict[str, str]
) -> str:
    """The uid of the nearest ancestor of ``path`` that something provides ("" when none),
    walking up only to a directory already walked (``known``; every file of a directory
    shares its walk, so a large directory costs one lookup a file)."""
    walked: list[str] = []
    found = ""
    while path != "/":
        path = path.rpartition("/")[0] or "/"
        uid = prefix + path
        seen = known.get(uid)
        if seen is not None:
            found = seen
            break
        walked.append(uid)
        if uid in providers:
            found = uid
            break
    for uid in walked:
        known[uid] = found
    return found


# -- cycle avoidance --------------------------------------------------------------------
#
# The common case costs one linear pass: if the explicit edges plus every wanted edge
# form no cycle, all are added. Otherwise only the wanted edges between vertices of the
# cyclic core (what is left after peeling off sources and sinks) can be on a cycle; the
# others are added at once, and those are inserted one by one into an incrementally
# maintained topological order (Pearce and Kelly), each search bounded by the order.


def _without_cycles(graph: Graph[T], wanted: list[_Pair]) -> tuple[list[_Pair], list[_Pair]]:
    """``wanted`` split into the edges to add and those that would close a cycle."""
    out: dict[str, list[str]] = {v: graph.downstream(v) for v in graph}
    for source, target in wanted:
        out[source].append(target)
    core = _cyclic_core(out)
    if not core:
        return wanted, []
    suspects = [p for p in wanted if p[0] in core and p[1] in core]
    added = [p for p in wanted if not (p[0] in core and p[1] in core)]
    order = _Order(graph, added)
    skipped: list[_Pair] = []
    for pair in suspects:
        if order.try_add(*pair):
            added.append(pair)
        else:
            skipped.append(pair)
    return added, skipped


def _cyclic_core(out: dict[str, list[str]]) -> set[str]:
    """Vertices left after repeatedly removing sources, then sinks: every vertex on a
    cycle is among them (empty when the graph is acyclic)."""
    indegree = dict.fromkeys(out, 0)
    for targets in out.values():
        for t in targets:
            indegree[t] += 1
    todo = deque(v for v, n in indegree.items() if n == 0)
    left = set(out)
    while todo:
        v = todo.popleft()
        left.discard(v)
        for t in out[v]:
            indegree[t] -= 1
            if indegree[t] == 0:
                todo.append(t)
    if not left:
        return left
    outdegree = {v: sum(t in left for t in out[v]) for v in left}
    into: dict[str, list[str]] = {v: [] for v in left}
    for v in left:
        for t in out[v]:
            if t in left:
                into[t].append(v)
    todo = deque(v for v, n in outdegree.items() if n == 0)
    while todo:
        v = todo.popleft()
        left.discard(v)
        for s in into[v]:
            outdegree[s] -= 1
            if outdegree[s] == 0:
                todo.append(s)
    return left


class _Order:
    """A topological order kept valid while edges are added (Pearce-Kelly)."""

    __slots__ = ("_in", "_out", "_pos")

    def __init__(self, graph: Graph[T], extra: list[_Pair]) -> None:
        self._out: dict[str, list[str]] = {v: graph.downstream(v) for v in graph}
        self._in: dict[str, list[str]] = {v: graph.upstream(v) for v in graph}
        for source, target in extra:
            self._out[source].append(target)
            self._in[target].append(source)
        sorter = graphlib.TopologicalSorter({v: self._in[v] for v in self._in})
        self._pos = {v: i for i, v in enumerate(sorter.static_order())}

    def try_add(self, source: str, target: str) -> bool:
        """Add ``source -> target`` unless it closes a cycle; say whether it was added."""
        pos = self._pos
        low, high = pos[target], pos[source]
        if low < high:
            forward = self._search(target, self._out, lambda p: p <= high)
            if source in forward:
                return False
            backward = self._search(source, self._in, lambda p: p >= low)
            moved = sorted(backward, key=pos.__getitem__) + sorted(forward, key=pos.__getitem__)
            for v, p in zip(moved, sorted(pos[v] for v in moved), strict=True):
                pos[v] = p
        self._out[source].append(target)
        self._in[target].append(source)
        return True

    def _search(
        self, start: str, adjacency: dict[str, list[str]], inside: Callable[[int], bool]
    ) -> set[str]:
        seen = {start}
        stack = [start]
        while stack:
            for v in adjacency[stack.pop()]:
                if v not in seen and inside(self._pos[v]):
                    seen.add(v)
                    stack.append(v)
        return seen
