"""From read entries to a graph: kinds, parameters, meta, identities, references, cycles.

Every front end (our YAML format, mgmt's yamlgraph, the fast line reader) reads a policy
into the same plain shape, :class:`~convergent.policy.entries.Entry` per resource and
:class:`~convergent.policy.entries.Link` per edge, each part with its
:class:`~convergent.policy.entries.Location`. :func:`build` checks all of it, reports
every problem at its location and returns the graph only when there is none.
"""

from __future__ import annotations

import graphlib
import typing
from typing import TYPE_CHECKING, Any

from convergent.errors import ParamError
from convergent.graph.collect import Collect
from convergent.graph.core import Graph
from convergent.policy.entries import (
    MAX_RESOURCES,
    Entry,
    Link,
    Location,
    Problems,
    too_many_resources,
)
from convergent.resources.base import (
    Meta,
    Params,
    Resource,
    convert_params,
    get_kind,
    kinds,
    param_fields,
    unknown_kind,
)

if TYPE_CHECKING:
    from convergent.policy.suggest import Suggester

__all__ = ["build"]

_DEFAULT_META = Meta()  # frozen: every entry without meta shares it (~230 B each)


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


def too_many(entries: list[Entry], problems: Problems) -> bool:
    """Whether there are more than :data:`MAX_RESOURCES` entries; if so the problem is
    added, at the first one past the limit (the fast path and the builder alike)."""
    if len(entries) <= MAX_RESOURCES:
        return False
    past = entries[MAX_RESOURCES]
    problems.at(past.kind_at, too_many_resources(), past.id)
    return True


def build(
    entries: list[Entry],
    links: list[Link],
    problems: Problems,
    collect: tuple[Collect, ...] = (),
) -> Graph[Resource[Any]] | None:
    """Check everything and return the graph, or None when ``problems`` is not empty.

    ``collect``: what the policy collects from other hosts (checked by its reader).
    More than :data:`MAX_RESOURCES` entries are one problem, at the first one past it,
    found before any is converted.
    """
    if too_many(entries, problems):
        return None
    known = _Kinds()
    first: dict[str, Entry] = {}
    resources: list[Resource[Any]] = []
    for entry in entries:
        rid = entry.id
        earlier = first.get(rid)
        if earlier is not None:
            problems.at(
                entry.name_at,
                f"already defined at {_place(earlier.name_at, entry.name_at)}; "
                "each kind[name] may appear once: merge the two entries or rename one",
                rid,
            )
            continue
        first[rid] = entry
        if entry.broken:
            continue
        resource = _resource(entry, rid, known, problems)
        if resource is not None:
            resources.append(resource)
            entry.converted()
    if any(link.source.startswith("world[") for link in links):
        _world_sources(links, first, resources)
    valid = _check_links(links, first, problems)
    _check_cycles(valid, first, problems)
    _check_semaphores(resources, first, problems)
    _check_ids(resources, first, problems)
    if any(link.recv is not None for link in valid):
        _check_recv(valid, resources, problems)
    _check_exports(valid, resources, first, problems)
    if problems:
        return None
    graph: Graph[Resource[Any]] = Graph()
    graph.collect = collect
    for resource in resources:
        graph.add(resource)
    for link in valid:
        recv = {link.recv.param: link.recv.output} if link.recv is not None else None
        graph.add_edge(link.source, link.target, notify=link.notify, recv=recv)
    return graph


def _place(at: Location, here: Location, column: bool = True) -> str:
    """``line 3, column 5`` (``line 3``) in the file of ``here``, else ``other.yaml:3:5``."""
    if at.file != here.file:
        return str(at) if column else f"{at.file}:{at.line}"
    return f"line {at.line}, column {at.col}" if column else f"line {at.line}"


def _resource(entry: Entry, rid: str, known: _Kinds, problems: Problems) -> Resource[Any] | None:
    cls = known.get(entry.kind)
    if cls is None:
        from convergent.policy.suggest import close_match

        names = list(kinds())
        close = close_match(entry.kind, names)
        hint = unknown_kind(entry.kind, typo=bool(close))
        problems.at(
            entry.kind_at,
            f"unknown resource kind '{entry.kind}'{close}; known kinds: {', '.join(names)}"
            + (f"; {hint}" if hint else ""),
            rid,
        )
        return None
    fields = known.fields(cls)
    ok = fields.issuperset(entry.params)
    for key in () if ok else entry.params:
        if key not in fields:
            from convergent.policy.suggest import close_match

            ok = False
            shown = entry.labels.get(key, key)
            hint = close_match(shown, sorted(fields))
            if not hint:
                hint = f"; {cls.kind} takes: {', '.join(param_fields(cls.params_type)) or 'none'}"
            problems.at(
                entry.keys.get(key, entry.name_at), f"unknown parameter '{shown}'{hint}", rid
            )
    meta = _meta(entry, problems) if entry.meta else _DEFAULT_META
    if not ok or meta is None:
        _type_problems(entry, cls.params_type, fields, "", problems)
        return None
    try:
        params = convert_params(cls.params_type, entry.params)
    except ParamError as exc:
        _param_problem(entry, exc, problems)
        _type_problems(entry, cls.params_type, fields, _top(exc.field or ""), problems)
        return None
    try:
        return cls(entry.name, params, meta=meta)
    except ParamError as exc:
        _param_problem(entry, exc, problems)
        return None


def _meta(entry: Entry, problems: Problems) -> Meta | None:
    if not entry.meta:
        return _DEFAULT_META
    fields = Meta.__struct_fields__
    ok = True
    for key in entry.meta:
        if key not in fields:
            from convergent.policy.suggest import close_match

            ok = False
            problems.at(
                entry.meta_keys.get(key, entry.name_at),
                f"unknown meta parameter '{key}'{close_match(key, fields)}; "
                f"meta takes: {', '.join(fields)}",
                entry.id,
            )
    if not ok:
        return None
    try:
        meta = typing.cast(Meta, convert_params(typing.cast(type[Params], Meta), entry.meta))
    except ParamError as exc:
        _param_problem(entry, exc, problems, meta=True)
        return None
    return meta


def _param_problem(entry: Entry, exc: ParamError, problems: Problems, meta: bool = False) -> None:
    """Report a ParamError at the value its ``field`` names (or at the resource)."""
    path = exc.field or ""
    top = _top(path)
    label = entry.labels.get(top, top)
    shown = ("meta." if meta else "") + label + path[len(top) :]
    if top not in (entry.meta_keys if meta else entry.keys):
        at, written = entry.name_at, None
        if exc.message == "required parameter is missing":
            problems.at(at, f"missing required parameter '{shown}'", entry.id)
            return
    else:
        at, written = entry.locate(path, meta)
    message = f"{shown}: {exc.message}" if path else exc.message
    if (
        exc.message.startswith("expected str")
        and exc.message.endswith(("got int", "got float", "got bool"))
        and written is not None
    ):
        message += f'; quote it to keep it as text: "{written}"'
    problems.at(at, message, entry.id)


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
                _param_problem(entry, exc, problems)


def _top(path: str) -> str:
    """The parameter a field path starts with: ``ifnewer.target`` -> ``ifnewer``."""
    return path.split(".", 1)[0].split("[", 1)[0]


def _check_semaphores(
    resources: list[Resource[Any]], entries: dict[str, Entry], problems: Problems
) -> None:
    """A semaphore id has one size in the whole graph; a second size names both resources."""
    sizes: dict[str, tuple[int, Location, str]] = {}
    for resource in resources:
        if not resource.meta.sema:
            continue
        entry = entries[resource.id]
        for i, (sema_id, size) in enumerate(resource.meta.semaphores()):
            at = entry.locate(f"sema[{i}]", meta=True)[0]
            known = sizes.setdefault(sema_id, (size, at, resource.id))
            if known[0] != size:
                problems.at(
                    at,
                    f"meta.sema[{i}]: semaphore '{sema_id}' has size {size} here but "
                    f"{known[0]} in {known[2]} ({_place(known[1], at, column=False)}); "
                    "give it the same size everywhere",
                    resource.id,
                )


# Accounts whose number is theirs alone: a second account of the same number would own
# every file of the first (useradd and groupadd refuse it, halfway through a run).
_UNIQUE_IDS = {"user": "uid", "group": "gid"}


def _check_ids(
    resources: list[Resource[Any]], entries: dict[str, Entry], problems: Problems
) -> None:
    """Two ``user`` resources (two ``group`` ones) present with the same uid (gid)."""
    seen: dict[tuple[str, int], tuple[Location, str]] = {}
    for resource in resources:
        field = _UNIQUE_IDS.get(resource.kind)
        if field is None:
            continue
        params = resource.params
        number = getattr(params, field, None)
        if number is None or getattr(params, "state", "present") != "present":
            continue
        at = entries[resource.id].locate(field)[0]
        known = seen.setdefault((resource.kind, number), (at, resource.id))
        if known[1] != resource.id:
            problems.at(
                at,
                f"{field} {number} is also {known[1]}'s ({_place(known[0], at, column=False)}); "
                f"two accounts of one {field} own each other's files: give each its own",
                resource.id,
            )


def _check_recv(links: list[Link], resources: list[Resource[Any]], problems: Problems) -> None:
    """Each received parameter exists and takes the type of the output it receives, which
    its sender sends. (A broken entry was reported already: it is skipped.)"""
    from convergent.resources.recv import recv_problem

    by_id = {resource.id: resource for resource in resources}
    for link in links:
        recv = link.recv
        sender, receiver = by_id.get(link.source), by_id.get(link.target)
        if recv is None or sender is None or receiver is None:
            continue
        found = recv_problem(sender, recv.output, receiver, recv.param)
        if found is not None:
            where, message = found
            at = recv.param_at if where == "param" else recv.output_at
            problems.at(at, f"recv {recv.param}: {message}", link.owner)


def _world_sources(
    links: list[Link], first: dict[str, Entry], resources: list[Resource[Any]]
) -> None:
    """The ``world[HOST]`` vertex of each ``recv: {p: world[HOST].NAME}`` (its sender)."""
    from convergent.graph.identity import parse_ref
    from convergent.resources.value import world_source

    for link in links:
        if link.recv is None or not link.source.startswith("world[") or link.source in first:
            continue
        host = parse_ref(link.source)[1]
        source = world_source(host)
        entry = Entry("world", host, link.source_at, link.source_at)
        first[source.id] = entry
        resources.append(source)


def _check_exports(
    links: list[Link], resources: list[Resource[Any]], entries: dict[str, Entry], problems: Problems
) -> None:
    """An exported resource is published as written: it receives nothing, and a value
    never receives a secret (the world holds none in clear)."""
    from convergent.resources.recv import sends

    by_id = {resource.id: resource for resource in resources}
    for link in links:
        recv = link.recv
        sender, receiver = by_id.get(link.source), by_id.get(link.target)
        if recv is None or sender is None or receiver is None:
            continue
        if receiver.meta.export:
            problems.at(
                recv.param_at,
                f"recv {recv.param}: an exported resource is published with the parameters "
                "written here and receives nothing; publish the value with a 'value' "
                "resource and receive it where the export is collected",
                link.owner,
            )
        output = sends(sender).get(recv.output)
        if receiver.kind == "value" and output is not None and output.secret:
            problems.at(
                recv.output_at,
                f"recv {recv.param}: {link.source}.{recv.output} is a secret, and a value is "
                "published to every host in clear; share the secret another way",
                link.owner,
            )
    for resource in resources:
        export = resource.meta.export
        if isinstance(export, list) and not all(isinstance(h, str) and h for h in export):
            problems.at(
                entries[resource.id].locate("export", meta=True)[0],
                "meta.export: give true, or a list of host names",
                resource.id,
            )


def _check_links(links: list[Link], ids: dict[str, Entry], problems: Problems) -> list[Link]:
    valid: list[Link] = []
    names: Suggester | None = None
    for link in links:
        ok = True
        for end, at in ((link.source, link.source_at), (link.target, link.target_at)):
            if end not in ids:
                ok = False
                if names is None:
                    from convergent.policy.suggest import Suggester

                    names = Suggester(ids)
                problems.at(
                    at,
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
                ids[cycle[0]].name_at,
                f"dependency cycle: {' -> '.join(cycle)}; "
                "remove one of these require/before/notify edges",
                cycle[0],
            )
            gone = set(cycle)
            upstream = {t: s - gone for t, s in upstream.items() if t not in gone}
            continue
        return
