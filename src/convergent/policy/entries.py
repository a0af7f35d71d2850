"""What every policy front end produces, in plain data: entries, links, locations, problems.

A front end (the YAML reader of :mod:`convergent.policy.native`, mgmt's yamlgraph in
:mod:`convergent.policy.mgmt`, the line reader of :mod:`convergent.policy.fast`) reads
its input into an :class:`Entry` per resource and a :class:`Link` per edge, each part
with the :class:`Location` (file, line, column) it was written at;
:func:`convergent.policy.build.build` checks them and makes the graph. Nothing here
knows YAML, so a problem can point into any file of a policy.

:data:`ENTRY_KEYS` is the one table of the keys every entry takes besides its kind's
parameters: the readers, the builder and the policy reference read it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from convergent.errors import Problem
from convergent.graph.core import MAX_RESOURCES
from convergent.graph.identity import format_id

__all__ = [
    "CACHE_FROM",
    "EDGE_KEYS",
    "ENTRY_KEYS",
    "ENTRY_KEY_NAMES",
    "MAX_EXPANDED_NODES",
    "MAX_NODES",
    "MAX_POLICY_BYTES",
    "MAX_RESOURCES",
    "TOP_KEYS",
    "Entry",
    "EntryKey",
    "Link",
    "Location",
    "Problems",
    "Recv",
    "edge",
    "mark_file",
    "too_many_resources",
    "too_many_values",
]


#: The largest policy file read (16 MiB): a thousand times the size of a large policy,
#: and small enough that loading it never takes more than a few hundred MiB.
MAX_POLICY_BYTES = 16 * 1024 * 1024
#: A policy shorter than this is read every time, never kept between runs
#: (``policy/cache.py``): its load (~200 plain entries at most) costs no more than the
#: cache's own work (its key, the modules' stamps, the decoders), and ``convergent run``
#: does not even import the cache for it.
CACHE_FROM = 16 * 1024
#: Aliases may make a policy stand for at most this many values, or four times the values
#: written, whichever is more: beyond, a small file could describe millions of edges.
MAX_EXPANDED_NODES = 1_000_000
#: The most values (YAML scalars, lists and mappings: each key and each value) a policy
#: is written with, in all its files, counted while they are read: 250,000 ``file``
#: entries of 11 (path, content, mode, owner, group) fit; a 16 MiB file can hold ~8,000,000
#: (a flow list of one-letter words), ~400 bytes each once composed.
MAX_NODES = 3_000_000
#: The top-level keys of our policy format (``graph:`` makes it an mgmt yamlgraph).
TOP_KEYS = (
    "resources",
    "collect",
    "vars",
    "classes",
    "include",
    "bundles",
    "invocations",
    "secrets",
)


# Its fields are given as types, not as annotations: this module's annotations are
# strings, and typing would compile each one (the first ``compile()`` of a run ~1 ms).
class Location(NamedTuple("Location", [("file", str), ("line", int), ("col", int)])):
    """Where something is written: file, line and column, both 1-based."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class EntryKey:
    """A key every entry may have: its name, its value and meaning (for the reference).

    ``edge``: for an ordering key, which end this entry is (``target``: the others go
    first; ``source``: this one goes first), else None. ``notify``: the edge refreshes.
    """

    __slots__ = ("edge", "meaning", "name", "notify", "value")

    def __init__(
        self, name: str, value: str, meaning: str, edge: str | None = None, notify: bool = False
    ) -> None:
        self.name = name
        self.value = value
        self.meaning = meaning
        self.edge = edge
        self.notify = notify


ENTRY_KEYS: tuple[EntryKey, ...] = (
    EntryKey("require", "`kind[name]` or a list", "these resources are converged first", "target"),
    EntryKey(
        "before", "`kind[name]` or a list", "this resource is converged before those", "source"
    ),
    EntryKey(
        "notify",
        "`kind[name]` or a list",
        "like `before`; they are refreshed when this one changed",
        "source",
        notify=True,
    ),
    EntryKey("meta", "a mapping", "meta parameters, handled by the engine for every kind (below)"),
    EntryKey(
        "recv",
        "a mapping",
        "`param: kind[name].output`: take that output (the sender goes first)",
    ),
    EntryKey(
        "destroy",
        "`remove` or `keep`",
        "what `convergent destroy` does with it (the same as `meta: {destroy: ...}`)",
    ),
)
#: The ordering keys: their values are references ``kind[name]``.
EDGE_KEYS: tuple[str, ...] = tuple(key.name for key in ENTRY_KEYS if key.edge)
#: Every key that is not a parameter of the entry's kind.
ENTRY_KEY_NAMES = frozenset(key.name for key in ENTRY_KEYS)
_T = TypeVar("_T")
_EDGES = {key.name: key for key in ENTRY_KEYS if key.edge}
_UNFILLED: dict[str, Any] = {}  # Entry.plain's unfilled maps: shared, so never written


def edge(key: str, owner: _T, other: _T) -> tuple[_T, _T, bool]:
    """``(source, target, notify)`` of the edge ``key: other`` written in the entry
    ``owner`` (an identity, or an identity with its location)."""
    found = _EDGES[key]
    if found.edge == "target":
        return other, owner, found.notify
    return owner, other, found.notify


if TYPE_CHECKING:
    from typing import Protocol

    class _Marked(Protocol):
        """A YAML node: anything with a ``start_mark`` (0-based line and column)."""

        @property
        def start_mark(self) -> Any: ...


_PATH_TOKEN = r"\.?([^.\[\]]+)|\[(\d+|\.\.\.)\]"  # compiled when a problem is located


class Entry:
    """One resource as read from a policy, with the location each part came from.

    ``name_at`` locates the resource (its name as written), ``kind_at`` its kind.
    ``keys`` gives where each parameter's key is written; ``spots`` where each value and
    each part of one is written, by field path (``cmd``, ``cmd[1]``, ``ifnewer.target``);
    ``written`` the text of a number or bool as written, by field path (``meta.`` first
    for a meta parameter), so an error can say how to quote it. ``labels`` gives the key
    as the author wrote it when it differs from our parameter name (mgmt's ``ifcmd``
    becomes ``onlyif``). The ``meta_`` fields
    are the same for meta parameters. ``broken``: a problem was already reported, so only
    the identity is registered (references to it still resolve).

    A front end may leave ``keys`` and ``spots`` empty (the fast one does: it hands any
    policy with a problem to the YAML path); a problem then points at the name.
    """

    # A plain class, not a dataclass: the fast front end's start-up pays for each import.
    __slots__ = (
        "broken",
        "keys",
        "kind",
        "kind_at",
        "labels",
        "meta",
        "meta_keys",
        "meta_spots",
        "name",
        "name_at",
        "params",
        "spots",
        "written",
    )

    def __init__(self, kind: str, name: str, kind_at: Location, name_at: Location) -> None:
        self.kind = kind
        self.name = name
        self.kind_at = kind_at
        self.name_at = name_at
        self.params: dict[str, Any] = {}
        self.keys: dict[str, Location] = {}
        self.spots: dict[str, Location] = {}
        self.written: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.meta: dict[str, Any] = {}
        self.meta_keys: dict[str, Location] = {}
        self.meta_spots: dict[str, Location] = {}
        self.broken = False

    @classmethod
    def plain(cls, kind: str, name: str, kind_at: Location, name_at: Location) -> Entry:
        """An entry with parameters only, as the fast front end reads it: the maps it
        never fills are one shared empty dict, never written (seven dicts fewer, ~450 B,
        for each resource of a load)."""
        entry = cls.__new__(cls)
        entry.kind = kind
        entry.name = name
        entry.kind_at = kind_at
        entry.name_at = name_at
        entry.params = {}
        none = _UNFILLED
        entry.keys = entry.spots = entry.meta_keys = entry.meta_spots = none
        entry.written = entry.labels = entry.meta = none
        entry.broken = False
        return entry

    @property
    def id(self) -> str:
        return format_id(self.kind, self.name)

    def converted(self) -> None:
        """The builder made its resource: the parameters live in it now, so the entry
        lets go of its own (their dict is ~180 B a resource at the peak of a load)."""
        self.params = _UNFILLED

    def locate(self, path: str, meta: bool = False) -> tuple[Location, str | None]:
        """Where the value at field ``path`` is written, and its text if it is a number
        or bool: the deepest part of the path the policy wrote (an error about a value it
        did not write points at its closest written parent), or the name."""
        spots = self.meta_spots if meta else self.spots
        found: Location | None = None
        at = ""
        for match in re.finditer(_PATH_TOKEN, path):
            key, index = match.groups()
            if index == "...":
                break
            step = (f".{key}" if at else key) if key is not None else f"[{index}]"
            spot = spots.get(at + step)
            if spot is None:
                break
            at += step
            found = spot
        if found is None:
            return self.name_at, None
        return found, self.written.get("meta." + at if meta else at)


class Recv:
    """``recv: {param: kind[name].output}``: ``param`` of the link's target takes
    ``output`` of its source; each with the place it was written at."""

    __slots__ = ("output", "output_at", "param", "param_at")

    def __init__(self, param: str, output: str, param_at: Location, output_at: Location) -> None:
        self.param = param
        self.output = output
        self.param_at = param_at
        self.output_at = output_at


class Link:
    """An edge ``source -> target`` as written: each end with the place that names it.

    ``label`` says which key wrote it (``require``, ``edge 'e1' from``...) and ``owner`` the
    resource whose entry holds it, for the problem's ``kind[name]``. ``recv``: the value
    this edge carries, for a link written by ``recv:``.
    """

    __slots__ = ("label", "notify", "owner", "recv", "source", "source_at", "target", "target_at")

    def __init__(
        self,
        source: str,
        source_at: Location,
        target: str,
        target_at: Location,
        notify: bool,
        label: str,
        owner: str | None = None,
        recv: Recv | None = None,
    ) -> None:
        self.source = source
        self.source_at = source_at
        self.target = target
        self.target_at = target_at
        self.notify = notify
        self.label = label
        self.owner = owner
        self.recv = recv


def too_many_values() -> str:
    """What a policy written with more than :data:`MAX_NODES` values is told (by every
    front end alike: the fast path counts the values YAML would make)."""
    return (
        f"the policy is written with more than {MAX_NODES:,} values in all its files, the "
        "most convergent reads (each key and each value counts: a file entry with content "
        "and mode is 7); give each host a policy with only its own resources, or split "
        "them between agents, each with its own policy and --state-dir"
    )


def too_many_resources() -> str:
    """What the first entry past :data:`MAX_RESOURCES` is told."""
    return (
        f"more than {MAX_RESOURCES:,} resources in one policy, the most convergent loads "
        "(each is kept in memory and watched); give each host a policy with only its own "
        "resources, or split them between agents, each with its own policy and --state-dir"
    )


def mark_file(mark: Any, default: str) -> str:
    """The file a YAML mark is in: an included file is composed from a stream named by
    its path; the policy itself from text (its marks say ``<unicode string>``)."""
    name: str = mark.name
    return default if name[:1] == "<" else name


def _clip(text: str | None, longest: int = 4096) -> Any:
    """``text`` cut to ``longest`` characters (``...`` marks the cut).

    A long name is written once in a policy but named by every problem of its resource:
    cut, it cannot make the error text grow with the square of the policy's size.
    """
    if text is None or len(text) <= longest:
        return text
    return text[: longest - 3] + "..."


class Problems:
    """Every problem found in a policy, each at its location (in any of its files).

    ``filename``: the file being read, for :meth:`add` and for a node given to :meth:`at`.
    """

    __slots__ = ("filename", "items")

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[Problem] = []

    def at(self, where: Location | _Marked, message: str, resource: str | None = None) -> None:
        """A problem at a location, or at a YAML node of the file being read."""
        if isinstance(where, Location):
            self.items.append(
                Problem(where.file, where.line, where.col, _clip(message), _clip(resource, 256))
            )
        else:
            mark = where.start_mark
            file = mark_file(mark, self.filename)
            line, col = mark.line + 1, mark.column + 1
            self.items.append(Problem(file, line, col, _clip(message), _clip(resource, 256)))

    def add(self, line: int, column: int, message: str, resource: str | None = None) -> None:
        """A problem at a line and column of the file being read."""
        problem = Problem(self.filename, line, column, _clip(message), _clip(resource, 256))
        self.items.append(problem)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def sorted(self) -> list[Problem]:
        """By file (the file being read first, the others as they were met), line, column."""
        order = {self.filename: 0}
        for problem in self.items:
            order.setdefault(problem.file, len(order))
        return sorted(self.items, key=lambda p: (order[p.file], p.line, p.column))
