"""Exported and collected resources at run time: what this host publishes, and the graph
it runs once the exports of every host it collects are added.

A resource with ``meta: {export: true}`` (or a list of host names: only they may
collect it) is published under ``/convergent/hosts/HOST/exports/KIND[NAME]`` as JSON
(kind, name, parameters as written, meta), with the agent's lease: it disappears when the
agent stops or dies. It is not part of the graph this host runs, unless one of its
``collect:`` entries takes it back like any other host's export.

:class:`Collector` keeps every host's exports as seen through one prefix watch and
builds the graph to run (:meth:`Collector.graph_for`): the policy's own resources
(exported ones taken out, with their edges), plus each export a ``collect:`` entry takes
and its allow-list accepts, built like a resource of the policy (parameters checked by
the kind). An export the allow-list does not accept is refused and reported with the
exporting host's name, once per distinct export; it is never built. The engine swaps in
the new graph whenever the exports change (a new one appears, one is withdrawn, a host's
lease ends), so a collected resource that is gone leaves the graph (and is reversed when
it says ``reverse: true``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from convergent.engine.report import Failed, Report
from convergent.errors import ParamError, ResourceError
from convergent.graph.collect import Collect, refusal
from convergent.graph.core import MAX_RESOURCES, Graph
from convergent.resources.base import Meta, Resource, convert_params, get_kind

__all__ = [
    "Collector",
    "exported",
    "host_of",
    "local_part",
    "uses_world",
]

_DEFAULT_META = Meta()


def exported(resource: Resource[Any]) -> bool:
    """Whether ``resource`` is published for other hosts (``meta.export``)."""
    export = resource.meta.export
    return export is True or (isinstance(export, list) and bool(export))


def host_of(key: str) -> str:
    """The host a key under ``/convergent/hosts/`` belongs to."""
    from convergent.world.keys import HOSTS  # the world's keys: loaded when it is used

    return key[len(HOSTS) :].partition("/")[0]


def encode(resource: Resource[Any]) -> str:
    """The JSON an export is published as: kind, name, parameters, meta (of both, only
    what differs from the defaults: a collecting host applies its own, as it does to a
    policy's resources; every collector and watcher is told each byte)."""
    meta = {
        field: getattr(resource.meta, field)
        for field in Meta.__struct_fields__
        if getattr(resource.meta, field) != getattr(_DEFAULT_META, field)
    }
    body = {
        "kind": resource.kind,
        "name": resource.name,
        "params": _declared(resource.params),
        "meta": msgspec.to_builtins(meta),
    }
    return msgspec.json.encode(body).decode()


_DEFAULTS: dict[type, dict[str, Any]] = {}  # a parameters type -> its defaults, as builtins


def _declared(params: Any) -> dict[str, Any]:
    """``params`` as JSON builtins, without the fields at their defaults."""
    defaults = _DEFAULTS.get(type(params))
    if defaults is None:
        defaults = _DEFAULTS[type(params)] = {}
        for field in msgspec.structs.fields(type(params)):
            if field.default is not msgspec.NODEFAULT:
                defaults[field.encode_name] = msgspec.to_builtins(field.default)
            elif field.default_factory is not msgspec.NODEFAULT:
                defaults[field.encode_name] = msgspec.to_builtins(field.default_factory())
    return {
        name: value
        for name, value in msgspec.to_builtins(params).items()
        if name not in defaults or not _same(defaults[name], value)
    }


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (``False == 0`` in Python; not here)."""
    return type(a) is type(b) and a == b


def local_part(graph: Graph[Resource[Any]]) -> Graph[Resource[Any]]:
    """``graph`` without its exported resources and the edges that touch them (the same
    graph when it exports nothing)."""
    gone = {vid for vid, resource in graph.vertices.items() if resource.meta.export}
    if not gone:
        return graph
    result: Graph[Resource[Any]] = Graph()
    result.collect = graph.collect
    for vid, resource in graph.vertices.items():
        if vid not in gone:
            result.add(resource)
    for edge in graph.edges():
        if edge.source not in gone and edge.target not in gone:
            result.add_edge(edge.source, edge.target, notify=edge.notify, recv=dict(edge.recv))
    return result


class Collector:
    """Every host's exports (from one watch of ``/convergent/hosts/``) and what this host makes of
    them. ``report``: where refusals go."""

    __slots__ = (
        "_built",
        "_refused",
        "exports",
        "hostname",
        "origins",
        "pretend",
        "published",
        "report",
    )

    def __init__(self, hostname: str, report: Callable[[Report], None]) -> None:
        self.hostname = hostname
        self.report = report
        self.exports: dict[str, str] = {}  # world key -> JSON, of every host
        self.published: dict[str, str] = {}  # this host's own export keys -> JSON
        self.pretend: dict[str, str] = {}  # under noop: this host's exports, not published
        self.origins: dict[str, str] = {}  # collected resource id -> the host that exported it
        self._refused: set[tuple[str, str]] = set()  # (key, JSON) already reported
        # What each export became, by key: (its JSON, the collect entries, the resource),
        # so an unchanged export is not decoded and checked again at every change.
        self._built: dict[str, tuple[str, tuple[Collect, ...], Resource[Any] | None]] = {}

    def seen(self, key: str, value: str | None) -> bool:
        """A write under ``/convergent/hosts/``; True for an export (the graph may change)."""
        from convergent.world.keys import EXPORTS, split_host_key

        split = split_host_key(key)
        if split is None or not split[1].startswith(EXPORTS + "/"):
            return False
        if value is None:
            return self.exports.pop(key, None) is not None
        if self.exports.get(key) == value:
            return False
        self.exports[key] = value
        return True

    def load(self, snapshot: Mapping[str, str]) -> None:
        """Every key under ``/convergent/hosts/`` as read once, after the watch was in place."""
        for key, value in snapshot.items():
            self.seen(key, value)

    def wanted(self, graph: Graph[Resource[Any]]) -> dict[str, str]:
        """This host's export keys and JSON for the resources ``graph`` exports."""
        from convergent.world.keys import export_key

        return {
            export_key(self.hostname, resource.kind, resource.name): encode(resource)
            for resource in graph.vertices.values()
            if exported(resource)
        }

    def graph_for(self, base: Graph[Resource[Any]]) -> Graph[Resource[Any]]:
        """The graph to run: ``base``'s own resources plus what its collect entries take
        from every host's exports."""
        graph = local_part(base)
        exports = {**self.exports, **self.pretend} if self.pretend else self.exports
        if not base.collect or not exports:
            self.origins = {}
            return graph
        if graph is base:
            graph = local_part_copy(base)
        by_host: dict[str, str] = {}
        built = self._built
        self._built = {}
        for key in sorted(exports, key=lambda k: (host_of(k), k)):
            text = exports[key]
            known = built.get(key)
            if known is not None and known[0] == text and known[1] == base.collect:
                resource = known[2]
            else:
                resource = self._collected(key, text, base.collect)
            self._built[key] = (text, base.collect, resource)
            if resource is None:
                continue
            rid, host = resource.id, host_of(key)
            if rid in graph:
                other = by_host.get(rid)
                whose = f"host {other}'s export" if other is not None else "this host's policy"
                self._refuse(key, rid, f"{rid} is already in the graph ({whose} wins)")
                continue
            if len(graph.vertices) >= MAX_RESOURCES:  # the exports after it are not built
                self._refuse(
                    key,
                    rid,
                    f"this host's graph holds {MAX_RESOURCES:,} resources already, the most "
                    "convergent runs, so this export and those after it are left out; "
                    "collect fewer (a narrower pattern, or where:)",
                )
                break
            by_host[rid] = host
            graph.add(resource)
        self.origins = by_host
        return graph

    def _collected(
        self, key: str, text: str, collects: tuple[Collect, ...]
    ) -> Resource[Any] | None:
        """The resource an export becomes here, or None (not collected, or refused)."""
        try:
            body = msgspec.json.decode(text, type=dict[str, Any])
            kind, name = body["kind"], body["name"]
            if not isinstance(kind, str) or not isinstance(name, str):
                raise TypeError("kind and name must be text")
            params = dict(body.get("params") or {})
            meta = dict(body.get("meta") or {})
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            self._refuse(key, key.rpartition("/")[2], f"unreadable export: {exc}")
            return None
        collect = next((c for c in collects if c.kind == kind), None)
        if collect is None:
            return None
        export = meta.pop("export", True)
        if isinstance(export, list) and self.hostname not in export:
            return None  # exported to other hosts only
        rid = f"{kind}[{name}]"
        if collect.pattern is not None:
            path = params.get("path") or name
            if not isinstance(path, str) or not posixpath.basename(path.rstrip("/")):
                self._refuse(key, rid, f"no file name to place in {collect.pattern}")
                return None
            base = posixpath.basename(path.rstrip("/"))
            if base in (".", ".."):
                self._refuse(key, rid, f"{path!r} has no file name to place in {collect.pattern}")
                return None
            params["path"] = posixpath.join(collect.pattern, base)
        cls = get_kind(kind)
        if cls is None:
            self._refuse(key, rid, f"kind {kind} is unknown here")
            return None
        if params.get("source") is not None:
            self._refuse(
                key, rid, "source: names a file of the collecting host; an export cannot copy one"
            )
            return None
        try:
            resource = cls(
                name, convert_params(cls.params_type, params), meta=msgspec.convert(meta, Meta)
            )
        except (ParamError, msgspec.ValidationError, TypeError) as exc:
            self._refuse(key, rid, f"invalid: {exc}")
            return None
        path_param = getattr(resource.params, "path", None)
        path = path_param if isinstance(path_param, str) else None
        if path is None and name.startswith("/"):
            path = name
        why = refusal(collect, kind, name, path)
        if why is not None:
            self._refuse(key, rid, f"{why} ({collect.describe()})")
            return None
        return resource

    def _refuse(self, key: str, rid: str, why: str) -> None:
        """Report a refused export once (until it changes)."""
        text = self.exports.get(key, "")
        if (key, text) in self._refused:
            return
        self._refused.add((key, text))
        message = f"refused the export from host {host_of(key)}: {why}; nothing was applied"
        self.report(Failed.of(rid, ResourceError(rid, message)))


def local_part_copy(graph: Graph[Resource[Any]]) -> Graph[Resource[Any]]:
    """A copy of ``graph`` (a collected resource must not be added to the policy's own)."""
    result: Graph[Resource[Any]] = Graph()
    result.collect = graph.collect
    for resource in graph.vertices.values():
        result.add(resource)
    for edge in graph.edges():
        result.add_edge(edge.source, edge.target, notify=edge.notify, recv=dict(edge.recv))
    return result


def uses_world(graph: Graph[Resource[Any]]) -> bool:
    """Whether ``graph`` exports or collects (its run is not converged before the world
    was seen)."""
    # meta.export is a bool or a list: truthy exactly when exported() says so
    return bool(graph.collect) or any(r.meta.export for r in graph.vertices.values())
