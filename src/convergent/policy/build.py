"""From read entries to a graph: kinds, parameters, meta, identities, references, cycles.

Both policy formats (ours and mgmt's yamlgraph) are read into the same plain shape,
:class:`Entry` per resource and :class:`Link` per edge, each carrying the YAML nodes it
came from. :func:`build` checks all of it, reports every problem at its node and returns
the graph only when there is none.
"""

from __future__ import annotations

import graphlib
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convergent.errors import ParamError
from convergent.graph.core import Graph
from convergent.graph.identity import format_id
from convergent.policy.nodes import Problems, find_node, is_scalar
from convergent.policy.suggest import Suggester, close_match
from convergent.resources.base import (
    Meta,
    Params,
    Resource,
    convert_params,
    get_kind,
    kinds,
    param_fields,
)

if TYPE_CHECKING:
    from yaml.nodes import Node

__all__ = ["Entry", "Link", "Recv", "build"]


@dataclass(slots=True, eq=False)
class Entry:
    """One resource as read from a policy, with the nodes each part came from.

    ``name_node`` locates the resource (its name as written), ``kind_node`` its kind.
    ``param_nodes`` maps a parameter to ``(key node, value node)``; ``labels`` gives the
    key as the author wrote it when it differs from our parameter name (mgmt's ``ifcmd``
    becomes ``onlyif``). ``broken``: a problem was already reported, so only the identity
    is registered (references to it still resolve).
    """

    kind: str
    name: str
    kind_node: Node
    name_node: Node
    params: dict[str, Any] = field(default_factory=dict)
    param_nodes: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    meta_nodes: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    broken: bool = False

    @property
    def id(self) -> str:
        return format_id(self.kind, self.name)


@dataclass(slots=True, eq=False)
class Recv:
    """``recv: {param: kind[name].output}``: ``param`` of the link's target takes
    ``output`` of its source; each with the node it was written at."""

    param: str
    output: str
    param_node: Node
    output_node: Node


@dataclass(slots=True, eq=False)
class Link:
    """An edge ``source -> target`` as written: each end with the node that names it.

    ``label`` says which key wrote it (``require``, ``edge 'e1' from``...) and ``owner`` the
    resource whose entry holds it, for the problem's ``kind[name]``. ``recv``: the value
    this edge carries, for a link written by ``recv:``.
    """

    source: str
    source_node: Node
    target: str
    target_node: Node
    notify: bool
    label: str
    owner: str | None = None
    recv: Recv | None = None


class _Kinds:
    """Kind lookups, cached for the duration of one load."""

    __slots__ = ("_classes", "_fields")

    def __init__(self) -> None:
        self._classes: dict[str, type[Resource[Any]] | None] = {}
        self._fields: dict[str, frozenset[str]] = {}

    def get(self, kind: str) -> type[Resource[Any]] | None:
        if kind not in self._classes:
            self._classes[kind] = get_kind(kind)
        return self._classes[kind]

    def fields(self, cls: type[Resource[Any]]) -> frozenset[str]:
        found = self._fields.get(cls.kind)
        if found is None:
            found = self._fields[cls.kind] = frozenset(param_fields(cls.params_type))
        return found


def build(
    entries: list[Entry], links: list[Link], problems: Problems
) -> Graph[Resource[Any]] | None:
    """Check everything and return the graph, or None when ``problems`` is not empty."""
    known = _Kinds()
    first: dict[str, Entry] = {}
    resources: list[Resource[Any]] = []
    for entry in entries:
        rid = entry.id
        earlier = first.get(rid)
        if earlier is not None:
            mark = earlier.name_node.start_mark
            problems.at(
                entry.name_node,
                f"already defined at line {mark.line + 1}, column {mark.column + 1}; "
                "each kind[name] may appear once: merge the two entries or rename one",
                rid,
            )
            continue
        first[rid] = entry
        if entry.broken:
            continue
        resource = _resource(entry, known, problems)
        if resource is not None:
            resources.append(resource)
    valid = _check_links(links, first, problems)
    _check_cycles(valid, first, problems)
    _check_semaphores(resources, first, problems)
    if any(link.recv is not None for link in valid):
        _check_recv(valid, resources, problems)
    if problems:
        return None
    graph: Graph[Resource[Any]] = Graph()
    for resource in resources:
        graph.add(resource)
    for link in valid:
        recv = {link.recv.param: link.recv.output} if link.recv is not None else None
        graph.add_edge(link.source, link.target, notify=link.notify, recv=recv)
    return graph


def _resource(entry: Entry, known: _Kinds, problems: Problems) -> Resource[Any] | None:
    rid = entry.id
    cls = known.get(entry.kind)
    if cls is None:
        names = list(kinds())
        problems.at(
            entry.kind_node,
            f"unknown resource kind '{entry.kind}'{close_match(entry.kind, names)}; "
            f"known kinds: {', '.join(names)}",
            rid,
        )
        return None
    fields = known.fields(cls)
    ok = True
    for key in entry.params:
        if key not in fields:
            ok = False
            shown = entry.labels.get(key, key)
            hint = close_match(shown, sorted(fields))
            if not hint:
                hint = f"; {cls.kind} takes: {', '.join(param_fields(cls.params_type)) or 'none'}"
            problems.at(entry.param_nodes[key][0], f"unknown parameter '{shown}'{hint}", rid)
    meta = _meta(entry, problems)
    if not ok or meta is None:
        _type_problems(entry, cls.params_type, fields, "", problems)
        return None
    try:
        params = convert_params(cls.params_type, entry.params)
    except ParamError as exc:
        _param_problem(entry, exc, problems, entry.param_nodes)
        _type_problems(entry, cls.params_type, fields, _top(exc.field or ""), problems)
        return None
    try:
        return cls(entry.name, params, meta=meta)
    except ParamError as exc:
        _param_problem(entry, exc, problems, entry.param_nodes)
        return None


def _meta(entry: Entry, problems: Problems) -> Meta | None:
    if not entry.meta:
        return Meta()
    fields = Meta.__struct_fields__
    ok = True
    for key in entry.meta:
        if key not in fields:
            ok = False
            problems.at(
                entry.meta_nodes[key][0],
                f"unknown meta parameter '{key}'{close_match(key, fields)}; "
                f"meta takes: {', '.join(fields)}",
                entry.id,
            )
    if not ok:
        return None
    try:
        meta = typing.cast(Meta, convert_params(typing.cast(type[Params], Meta), entry.meta))
    except ParamError as exc:
        _param_problem(entry, exc, problems, entry.meta_nodes, prefix="meta.")
        return None
    return meta


def _param_problem(
    entry: Entry,
    exc: ParamError,
    problems: Problems,
    nodes: dict[str, tuple[Node, Node]],
    prefix: str = "",
) -> None:
    """Report a ParamError at the value its ``field`` names (or at the resource)."""
    path = exc.field or ""
    top = _top(path)
    written = nodes.get(top)
    label = entry.labels.get(top, top)
    shown = prefix + label + path[len(top) :]
    if written is None:
        node = entry.name_node
        if exc.message == "required parameter is missing":
            problems.at(node, f"missing required parameter '{shown}'", entry.id)
            return
    else:
        node = find_node(written[1], path[len(top) :])
    message = f"{shown}: {exc.message}" if path else exc.message
    if (
        exc.message.startswith("expected str")
        and exc.message.endswith(("got int", "got float", "got bool"))
        and is_scalar(node)
    ):
        message += f'; quote it to keep it as text: "{node.value}"'
    problems.at(node, message, entry.id)


def _type_problems(
    entry: Entry, params_type: type[Params], fields: frozenset[str], done: str, problems: Problems
) -> None:
    """msgspec stops at the first wrong value: convert the others one by one to find more.

    ``done``: the parameter already reported.
    """
    for key, value in entry.params.items():
        if key == done or key not in fields:
            continue
        try:
            convert_params(params_type, {key: value})
        except ParamError as exc:
            if exc.field and _top(exc.field) == key:
                _param_problem(entry, exc, problems, entry.param_nodes)


def _top(path: str) -> str:
    """The parameter a field path starts with: ``ifnewer.target`` -> ``ifnewer``."""
    return path.split(".", 1)[0].split("[", 1)[0]


def _check_semaphores(
    resources: list[Resource[Any]], entries: dict[str, Entry], problems: Problems
) -> None:
    """A semaphore id has one size in the whole graph; a second size names both resources."""
    sizes: dict[str, tuple[int, Node, str]] = {}
    for resource in resources:
        if not resource.meta.sema:
            continue
        entry = entries[resource.id]
        written = entry.meta_nodes.get("sema")
        for i, (sema_id, size) in enumerate(resource.meta.semaphores()):
            node = find_node(written[1], f"[{i}]") if written else entry.name_node
            known = sizes.setdefault(sema_id, (size, node, resource.id))
            if known[0] != size:
                mark = known[1].start_mark
                problems.at(
                    node,
                    f"meta.sema[{i}]: semaphore '{sema_id}' has size {size} here but "
                    f"{known[0]} in {known[2]} (line {mark.line + 1}); "
                    "give it the same size everywhere",
                    resource.id,
                )


def _check_recv(links: list[Link], resources: list[Resource[Any]], problems: Problems) -> None:
    """Each received parameter exists and takes the type of the output it receives, which
    its sender sends. (A broken entry was reported already: it is skipped.)"""
    from convergent.engine.recv import recv_problem

    by_id = {resource.id: resource for resource in resources}
    for link in links:
        recv = link.recv
        sender, receiver = by_id.get(link.source), by_id.get(link.target)
        if recv is None or sender is None or receiver is None:
            continue
        found = recv_problem(sender, recv.output, receiver, recv.param)
        if found is not None:
            where, message = found
            node = recv.param_node if where == "param" else recv.output_node
            problems.at(node, f"recv {recv.param}: {message}", link.owner)


def _check_links(links: list[Link], ids: dict[str, Entry], problems: Problems) -> list[Link]:
    valid: list[Link] = []
    names: Suggester | None = None
    for link in links:
        ok = True
        for end, node in ((link.source, link.source_node), (link.target, link.target_node)):
            if end not in ids:
                ok = False
                if names is None:
                    names = Suggester(ids)
                problems.at(
                    node,
                    f"{link.label}: no resource {end} in this policy{names.hint(end)}",
                    link.owner,
                )
        if ok:
            valid.append(link)
    return valid


def _check_cycles(links: list[Link], ids: dict[str, Entry], problems: Problems) -> None:
    """Report every cycle that shares no resource with another one already reported."""
    upstream: dict[str, set[str]] = {}
    for link in links:
        upstream.setdefault(link.target, set()).add(link.source)
    if not upstream:
        return
    order = {rid: i for i, rid in enumerate(ids)}
    while True:
        sorter = graphlib.TopologicalSorter(upstream)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle: list[str] = list(exc.args[1])[:-1]
            start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
            cycle = cycle[start:] + cycle[:start]
            cycle.append(cycle[0])
            problems.at(
                ids[cycle[0]].name_node,
                f"dependency cycle: {' -> '.join(cycle)}; "
                "remove one of these require/before/notify edges",
                cycle[0],
            )
            gone = set(cycle)
            upstream = {t: s - gone for t, s in upstream.items() if t not in gone}
            continue
        return
