"""The dependency graph: pure data, no asyncio, no I/O.

Vertices are identified by their ``kind[name]`` string and carry an opaque payload
(the engine stores resources there). An edge ``a -> b`` means *a before b*; an edge
with ``notify`` also carries a refresh from ``a`` to ``b`` when ``a`` changed something,
and an edge with ``recv`` carries values: outputs of ``a`` become parameters of ``b``.
"""

from __future__ import annotations

import graphlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

import msgspec

from convergent.errors import CycleError, MissingVertexError
from convergent.graph.collect import Collect
from convergent.hints import as_types

__all__ = ["MAX_RESOURCES", "Edge", "Graph", "Identified", "parse_output_ref"]

#: The most resources one graph holds: what a policy declares (its loader refuses the
#: first one past it) and what a run collects from other hosts. 2.5 times the 100,000 the
#: benchmarks check, and few enough that checking them stays under ~700 MiB (~2.6 KiB
#: each for the lightest kind).
MAX_RESOURCES = 250_000


class Identified(Protocol):
    """Anything with a ``kind[name]`` identity can be a vertex payload."""

    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=Identified)


class Edge(msgspec.Struct, frozen=True):
    """``source`` runs before ``target``; ``notify`` sends ``target`` a refresh on change.

    ``recv``: ``(parameter, output)`` pairs, sorted: the ``output`` of ``source`` is the
    value of ``target``'s ``parameter`` (send/recv).
    """

    source: str
    target: str
    notify: bool = False
    recv: tuple[tuple[str, str], ...] = ()


as_types(Edge)  # decoded from the policy cache (hints.py)


def _ref_id(ref: str | Identified) -> str:
    return ref if isinstance(ref, str) else ref.id


def parse_output_ref(ref: str) -> tuple[str, str]:
    """Split ``kind[name].output`` into ``("kind[name]", "output")``.

    Raises ValueError with the expected spelling when ``ref`` is not one.
    """
    head, dot, output = ref.strip().rpartition(".")
    if not (dot and head.endswith("]") and "[" in head and output.isidentifier()):
        raise ValueError(
            f"{ref!r} is not an output reference; write it as kind[name].output, "
            "e.g. password[db].password"
        )
    return head, output


class Graph(Generic[T]):
    """A directed graph of resources keyed by identity.

    Edges may name vertices that are added later; :meth:`validate` reports any edge
    whose end never arrived, and any cycle. A graph that passed :meth:`validate` is not
    checked again until a vertex or an edge is added (loading, autoedges, autogrouping
    and the engine each validate the same graph).
    """

    __slots__ = (
        "_in",
        "_lent",
        "_out",
        "_valid",
        "_vertices",
        "clusters",
        "collect",
        "held",
        "secrets",
    )

    def __init__(self) -> None:
        # What the policy collects from other hosts (graph/collect.py), in its order.
        self.collect: tuple[Collect, ...] = ()
        # The policy's bundle uses, ``BUNDLE[USE]`` -> the vertices that use made, in order.
        self.clusters: dict[str, tuple[str, ...]] = {}
        # Secret values the policy was given (never shown in a report), and the parameters
        # of each vertex that hold one (their diffs are never shown).
        self.secrets: frozenset[str] = frozenset()
        self.held: dict[str, tuple[str, ...]] = {}
        self._vertices: dict[str, T] = {}
        self._out: dict[str, dict[str, Edge]] = {}
        self._in: dict[str, dict[str, Edge]] = {}
        self._valid = False  # validate() passed and nothing was added since
        # _vertices is shared with a copy (graph/autoedge.py: copy_graph): the first
        # add() copies it (one dict of N entries less for the engine's prepared graph).
        self._lent = False

    @classmethod
    def of(
        cls,
        vertices: dict[str, T],
        edges: Iterable[Edge],
        into: Iterable[tuple[str, Iterable[str]]],
    ) -> Graph[T]:
        """The graph another one was, from what it gave: :attr:`vertices` (taken as it
        is: each key must be its payload's ``id``), :meth:`edges` and :meth:`into`, each
        order kept (the order of a vertex's sources is its topological order's, and so
        its grouping's); a saved graph made again without a call per vertex
        (policy/cache.py)."""
        graph: Graph[T] = cls()
        graph._vertices = vertices
        out = graph._out
        for edge in edges:
            out.setdefault(edge.source, {})[edge.target] = edge
        graph._in = {target: {s: out[s][target] for s in sources} for target, sources in into}
        return graph

    # -- building ---------------------------------------------------------------------

    def add(
        self,
        payload: T,
        *,
        require: Iterable[str | Identified] = (),
        before: Iterable[str | Identified] = (),
        notify: Iterable[str | Identified] = (),
        recv: Mapping[str, str | tuple[str | Identified, str]] | None = None,
    ) -> T:
        """Add a vertex with its edges and return the payload (handy for chaining).

        ``require``: these run first. ``before``: this runs first. ``notify``: this runs
        first and sends them a refresh when it changed something. ``recv``: parameter ->
        output of another vertex, as ``"kind[name].output"`` or ``(vertex, "output")``;
        that vertex runs first and its output becomes the parameter's value.
        """
        vid = payload.id
        if vid in self._vertices:
            raise ValueError(f"{vid} is already in the graph; each kind[name] may appear once")
        received: dict[str, dict[str, str]] = {}
        for param, given in (recv or {}).items():
            source, output = (
                parse_output_ref(given) if isinstance(given, str) else (_ref_id(given[0]), given[1])
            )
            received.setdefault(source, {})[param] = output
        self._valid = False
        if self._lent:
            self._vertices = dict(self._vertices)
            self._lent = False
        self._vertices[vid] = payload
        for ref in require:
            self.add_edge(_ref_id(ref), vid)
        for ref in before:
            self.add_edge(vid, _ref_id(ref))
        for ref in notify:
            self.add_edge(vid, _ref_id(ref), notify=True)
        for source, outputs in received.items():
            self.add_edge(source, vid, recv=outputs)
        return payload

    def add_edge(
        self,
        source: str,
        target: str,
        *,
        notify: bool = False,
        recv: Mapping[str, str] | None = None,
    ) -> Edge:
        """Add ``source -> target``; adding it again only ever turns ``notify`` on and adds
        ``recv`` pairs (parameter of ``target`` -> output of ``source``).

        Raises ValueError when a parameter would receive two outputs of ``source``.
        """
        self._valid = False
        old = self._out.get(source, {}).get(target)
        pairs = old.recv if old is not None else ()
        if recv:
            merged = dict(pairs)
            for param, output in recv.items():
                if merged.setdefault(param, output) != output:
                    raise ValueError(
                        f"{target}: parameter '{param}' would receive both "
                        f"{source}.{merged[param]} and {source}.{output}; "
                        "a parameter receives one output"
                    )
            pairs = tuple(sorted(merged.items()))
        edge = Edge(source, target, notify or (old is not None and old.notify), pairs)
        self._out.setdefault(source, {})[target] = edge
        self._in.setdefault(target, {})[source] = edge
        return edge

    # -- reading ----------------------------------------------------------------------

    def __contains__(self, vid: object) -> bool:
        return vid in self._vertices

    def __len__(self) -> int:
        return len(self._vertices)

    def __iter__(self) -> Iterator[str]:
        return iter(self._vertices)

    def __getitem__(self, vid: str) -> T:
        return self._vertices[vid]

    @property
    def vertices(self) -> dict[str, T]:
        """Identity -> payload, in insertion order (read only by convention)."""
        return self._vertices

    def edges(self) -> Iterator[Edge]:
        for targets in self._out.values():
            yield from targets.values()

    def into(self) -> Iterator[tuple[str, list[str]]]:
        """Each vertex with edges in and their sources, in the order they were added."""
        for target, sources in self._in.items():
            yield target, list(sources)

    def edge(self, source: str, target: str) -> Edge | None:
        return self._out.get(source, {}).get(target)

    def upstream(self, vid: str) -> list[str]:
        """Vertices with an edge into ``vid``."""
        return list(self._in.get(vid, ()))

    def downstream(self, vid: str) -> list[str]:
        """Vertices ``vid`` has an edge to."""
        return list(self._out.get(vid, ()))

    def out_edges(self, vid: str) -> list[Edge]:
        return list(self._out.get(vid, {}).values())

    def in_edges(self, vid: str) -> list[Edge]:
        return list(self._in.get(vid, {}).values())

    def descendants(self, vid: str) -> set[str]:
        """Every vertex reachable from ``vid`` (not including ``vid`` itself)."""
        seen: set[str] = set()
        todo = deque(self._out.get(vid, ()))
        while todo:
            v = todo.popleft()
            if v not in seen:
                seen.add(v)
                todo.extend(self._out.get(v, ()))
        return seen

    def reachable(self, source: str, target: str) -> bool:
        """True when a path of one or more edges leads from ``source`` to ``target``."""
        return target in self.descendants(source)

    # -- checking ---------------------------------------------------------------------

    def dangling(self) -> list[Edge]:
        """Edges whose source or target was never added."""
        return [
            e
            for e in self.edges()
            if e.source not in self._vertices or e.target not in self._vertices
        ]

    def find_cycle(self) -> list[str] | None:
        """One cycle as ``[a, b, ..., a]`` in edge direction, or None."""
        if not self._in:  # no edges, no cycle
            return None
        sorter = graphlib.TopologicalSorter({v: self._in.get(v, {}).keys() for v in self._vertices})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            # graphlib lists the cycle in edge direction, first vertex repeated at the end.
            cycle: list[str] = list(exc.args[1])
            return cycle
        return None

    def topological_order(self) -> list[str]:
        """Vertices with every vertex after all of its upstream; raises CycleError."""
        self.validate()
        if not self._in:  # what graphlib gives without edges: insertion order
            return list(self._vertices)
        sorter = graphlib.TopologicalSorter({v: self._in.get(v, {}).keys() for v in self._vertices})
        return list(sorter.static_order())

    def validate(self) -> None:
        """Raise MissingVertexError for a dangling edge, CycleError for a cycle."""
        if self._valid:
            return
        for edge in self.dangling():
            if edge.target not in self._vertices:
                raise MissingVertexError(edge.source, edge.target)
            raise MissingVertexError(edge.target, edge.source)
        cycle = self.find_cycle()
        if cycle is not None:
            raise CycleError(cycle)
        self._valid = True
