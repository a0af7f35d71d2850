"""Reads mgmt's yamlgraph format (a top-level ``graph:`` key) into entries and links.

::

    graph: mygraph
    resources:
      file:
      - name: file1
        path: /tmp/mgmt/f1
        content: "i am f1\\n"
        state: exists
      exec:
      - name: exec1
        cmd: touch /tmp/mgmt/done
        shell: ''
    edges:
    - name: e1
      from: {kind: file, name: file1}
      to: {kind: exec, name: exec1}
      notify: true

The resource keeps mgmt's name (``file[file1]``), so edges resolve as in mgmt. What
each mgmt parameter becomes:

- file: ``path`` (default: the name; ``dirname``/``basename`` override its parts; a
  trailing slash means a directory), ``state`` ``exists``/``absent`` (a directory
  becomes ``state: directory``; left out, convergent's default applies), ``content``
  (ignored with ``state: absent``, as older mgmt did), ``source``, ``mode``, ``owner``,
  ``group``, ``force``.
- exec: ``cmd`` (default: the name) runs as mgmt runs it: without ``shell`` it is split
  on whitespace (plus ``args``), with ``shell`` it becomes ``[shell, -c, cmd]``; ``ifcmd``
  / ``ifshell`` become ``onlyif`` the same way; ``cwd``, ``timeout`` (0: none), ``env``,
  ``creates``.
- noop: ``comment`` is dropped.
- meta: ``noop``, ``retry``, ``delay`` (milliseconds in mgmt, seconds here),
  ``timeout`` (milliseconds; 0: none), ``poll`` (seconds), ``limit``, ``burst``,
  ``sema``, ``rewatch``, ``autoedge``, ``autogroup``; ``retryreset`` is accepted at
  either value (convergent always resets the retry count after a success). Any other
  mgmt meta parameter is accepted only at mgmt's default. One difference: mgmt keeps
  ``foo`` and ``foo:2`` as two semaphores, convergent rejects one id with two sizes.
- other kinds convergent knows take their parameters as they are.

Go's zero value means "not set" in mgmt, so ``watchcmd: ''`` or ``pollint: 0`` (as
mgmt's own examples write them) are accepted; a setting convergent cannot honour
(a watch command, another user, ``remote:``...) is a problem that names it.

Exported resources (``@@name``: the resource ``name``, published for other hosts, not
applied here unless collected) and ``collect: [{kind, pattern}]`` keep mgmt's meaning:
a collected file is placed in the pattern directory under its own base name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from convergent.graph.identity import format_id
from convergent.policy.entries import Entry, Link, Location, Problems
from convergent.policy.nodes import (
    Values,
    describe,
    is_list,
    is_mapping,
    is_null,
    is_scalar,
)
from convergent.policy.suggest import close_match
from convergent.resources.base import get_kind, kinds, unknown_kind

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.graph.collect import Collect

__all__ = ["read_mgmt"]

_TOP_KEYS = ("graph", "resources", "edges", "comment", "collect", "remote")
_EDGE_KEYS = ("name", "from", "to", "notify")

# mgmt meta parameter -> its default (a value that changes nothing here).
_META_DEFAULTS: dict[str, Any] = {
    "autoedge": True,
    "autogroup": True,
    "noop": False,
    "retry": 0,
    "retryreset": False,
    "delay": 0,
    "poll": 0,
    "limit": math.inf,
    "burst": 0,
    "reset": False,
    "sema": [],
    "rewatch": False,
    "timeout": 0,
    "realize": False,
    "reverse": None,
    "dollar": False,
    "hidden": False,
    "export": [],
}


def _same(value: Any) -> Any:
    return value


def _ms(value: Any) -> Any:
    """mgmt's milliseconds as seconds; anything else is left for Meta to reject."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000
    return value


def _ms_or_none(value: Any) -> Any:
    """mgmt's timeout: milliseconds, 0 for none."""
    return None if value == 0 and not isinstance(value, bool) else _ms(value)


# mgmt meta parameter -> convergent's Meta field of the same meaning, and the conversion
# of its value.
_META_MAP: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "noop": ("noop", _same),
    "retry": ("retry", _same),
    "delay": ("delay", _ms),
    "timeout": ("timeout", _ms_or_none),
    "poll": ("poll", _same),
    "limit": ("limit", _same),
    "burst": ("burst", _same),
    "sema": ("sema", _same),
    "rewatch": ("rewatch", _same),
    "autoedge": ("autoedge", _same),
    "autogroup": ("autogroup", _same),
    "export": ("export", _same),
}
# mgmt meta parameters accepted at any value because convergent always behaves as one
# of their values does.
_META_ANY = ("retryreset",)

_FILE_KEYS = (
    "path",
    "dirname",
    "basename",
    "state",
    "content",
    "source",
    "fragments",
    "owner",
    "group",
    "mode",
    "recurse",
    "force",
    "purge",
    "symlink",
)
_EXEC_KEYS = (
    "cmd",
    "args",
    "cwd",
    "shell",
    "timeout",
    "env",
    "creates",
    "watchcmd",
    "watchcwd",
    "watchshell",
    "ifcmd",
    "ifcwd",
    "ifshell",
    "donecmd",
    "donecwd",
    "doneshell",
    "user",
    "group",
    "pollint",
    "state",
)

_Pairs: TypeAlias = "dict[str, tuple[Node, Node]]"


def read_mgmt(root: Node, values: Values) -> tuple[list[Entry], list[Link], tuple[Collect, ...]]:
    """Entries, links and collect entries of an mgmt yamlgraph whose top level is the
    mapping ``root``."""
    problems = values.problems
    entries: list[Entry] = []
    links: list[Link] = []
    collect: tuple[Collect, ...] = ()
    top = {key: (key_node, value_node) for key, key_node, value_node in values.pairs(root)}
    for key, (key_node, value_node) in top.items():
        if key not in _TOP_KEYS:
            problems.at(
                key_node,
                f"unknown mgmt yamlgraph key '{key}'{close_match(key, _TOP_KEYS)}; "
                f"a yamlgraph has: {', '.join(_TOP_KEYS)}",
            )
        elif key == "collect" and not _zero(values.value(value_node)):
            from convergent.policy.collect import read_collect

            collect = read_collect(value_node, values, native=False)
        elif key == "remote" and not _zero(values.value(value_node)):
            problems.at(
                key_node,
                f"mgmt '{key}:' names the host this graph is for: `convergent run FILE` "
                "sends it there; to apply it on this host, remove the line",
            )
    graph_node = top["graph"][1]
    if not is_scalar(graph_node) or not values.text(graph_node).strip() or is_null(graph_node):
        problems.at(graph_node, "'graph:' needs the graph's name, e.g. 'graph: mygraph'")
    if "resources" in top:
        _read_resources(top["resources"][1], values, entries)
    if "edges" in top:
        _read_edges(top["edges"][1], values, links)
    return entries, links, collect


def _zero(value: Any) -> bool:
    """Go's zero value: mgmt's way of saying "not set"."""
    return (
        value is None or value is False or value == 0 or value == "" or value == [] or value == {}
    )


def _read_resources(node: Node, values: Values, entries: list[Entry]) -> None:
    problems = values.problems
    if is_null(node):
        return
    if not is_mapping(node):
        problems.at(
            node,
            f"in an mgmt yamlgraph, 'resources:' maps each kind to a list of resources "
            f"('file: [{{name: f1, path: /tmp/f1}}]'), got {describe(node)}",
        )
        return
    for kind, kind_node, items in values.pairs(node):
        reader = _READERS.get(kind)
        if reader is None and get_kind(kind) is None:
            names = list(kinds())
            close = close_match(kind, names)
            hint = unknown_kind(kind, typo=bool(close))
            problems.at(
                kind_node,
                f"mgmt kind '{kind}' is not supported by convergent{close}; "
                f"supported kinds: {', '.join(names)}" + (f"; {hint}" if hint else ""),
            )
            continue
        if is_null(items):
            continue
        if not is_list(items):
            problems.at(
                items,
                f"'{kind}:' must be a list of resources ('- name: ...'), got {describe(items)}",
            )
            continue
        for item in items.value:
            entry = _read_item(kind, kind_node, item, values, reader)
            if entry is not None:
                entries.append(entry)


def _read_item(
    kind: str, kind_node: Node, item: Node, values: Values, reader: _Reader | None
) -> Entry | None:
    problems = values.problems
    if not is_mapping(item):
        problems.at(item, f"an mgmt {kind} resource is a mapping with a name, got {describe(item)}")
        return None
    pairs: _Pairs = {}
    name_node: Node | None = None
    meta_node: Node | None = None
    for key, key_node, value_node in values.pairs(item):
        if key == "name":
            name_node = value_node
        elif key == "meta":
            meta_node = value_node
        else:
            pairs[key] = (key_node, value_node)
    if name_node is None or not is_scalar(name_node) or is_null(name_node):
        problems.at(name_node or item, f"an mgmt {kind} resource needs a name: 'name: {kind}1'")
        return None
    name = values.text(name_node)
    if not name.strip():
        problems.at(name_node, f"an mgmt {kind} resource needs a non-empty name")
        return None
    exported = name.startswith("@@")
    if exported:
        name = name[2:]
        if not name.strip():
            problems.at(name_node, f"an exported mgmt {kind} resource needs a name after '@@'")
            return None
    entry = Entry(kind, name, values.at(kind_node), values.at(name_node))
    if meta_node is not None:
        _read_meta(entry, meta_node, values)
    if exported and not entry.meta.get("export"):
        entry.meta["export"] = True  # '@@': published for every host that collects it
    if reader is None:
        for key, (key_node, value_node) in pairs.items():
            entry.params[key] = values.value(value_node, entry.id)
            entry.keys[key] = values.at(key_node)
            values.spots(value_node, key, entry.spots, entry.written, "")
    else:
        reader(entry, pairs, _Mapper(entry, values))
    return entry


def _read_meta(entry: Entry, node: Node, values: Values) -> None:
    problems = values.problems
    if is_null(node):
        return
    if not is_mapping(node):
        problems.at(node, f"meta: expected a mapping, got {describe(node)}", entry.id)
        entry.broken = True
        return
    for key, key_node, value_node in values.pairs(node, entry.id):
        value = values.value(value_node, entry.id)
        if key in _META_MAP:
            if value is None:  # written but empty: Go's zero value, "not set"
                continue
            field, convert = _META_MAP[key]
            entry.meta[field] = convert(value)
            entry.meta_keys[field] = values.at(key_node)
            values.spots(value_node, field, entry.meta_spots, entry.written, "meta.")
        elif key in _META_ANY:
            if value is not None and not isinstance(value, bool):
                problems.at(value_node, f"meta {key}: expected true or false", entry.id)
                entry.broken = True
        elif key not in _META_DEFAULTS:
            problems.at(
                key_node,
                f"unknown mgmt meta parameter '{key}'{close_match(key, list(_META_DEFAULTS))}",
                entry.id,
            )
            entry.broken = True
        elif value != _META_DEFAULTS[key] and not (_zero(value) and _zero(_META_DEFAULTS[key])):
            problems.at(
                key_node,
                f"mgmt meta parameter '{key}' is not supported by convergent yet "
                f"(only its default, {_META_DEFAULTS[key]!r}); remove it",
                entry.id,
            )
            entry.broken = True


class _Mapper:
    """Reads one mgmt resource's fields and sets convergent parameters from them."""

    __slots__ = ("entry", "problems", "values")

    def __init__(self, entry: Entry, values: Values) -> None:
        self.entry = entry
        self.values = values
        self.problems: Problems = values.problems

    def check_keys(self, pairs: _Pairs, known: tuple[str, ...]) -> None:
        for key, (key_node, _) in pairs.items():
            if key not in known:
                self.problems.at(
                    key_node,
                    f"unknown mgmt {self.entry.kind} parameter '{key}'{close_match(key, known)}",
                    self.entry.id,
                )
                self.entry.broken = True

    def text(self, pairs: _Pairs, key: str) -> str:
        """A string field as mgmt's YAML decoder reads it: any scalar's text, '' if unset."""
        found = pairs.get(key)
        if found is None or is_null(found[1]):
            return ""
        if not is_scalar(found[1]):
            self.problems.at(
                found[1], f"{key}: expected text, got {describe(found[1])}", self.entry.id
            )
            self.entry.broken = True
            return ""
        return self.values.text(found[1])

    def value(self, pairs: _Pairs, key: str, check: Callable[[Any], bool], expected: str) -> Any:
        found = pairs.get(key)
        if found is None:
            return None
        value = self.values.value(found[1], self.entry.id)
        if value is not None and not check(value):
            self.problems.at(found[1], f"{key}: expected {expected}", self.entry.id)
            self.entry.broken = True
            return None
        return value

    def unsupported(self, pairs: _Pairs, key: str, why: str) -> None:
        """``key`` has no meaning in convergent: a problem unless it is unset."""
        found = pairs.get(key)
        if found is not None and not _zero(self.values.value(found[1], self.entry.id)):
            self.problems.at(found[0], f"mgmt {key}: {why}; remove it", self.entry.id)
            self.entry.broken = True

    def set(self, param: str, value: Any, pairs: _Pairs, key: str) -> None:
        """Set parameter ``param`` from mgmt field ``key`` (errors will point there)."""
        self.entry.params[param] = value
        found = pairs.get(key)
        if found is not None:
            self.entry.keys[param] = self.values.at(found[0])
            self.values.spots(found[1], param, self.entry.spots, self.entry.written, "")
            if key != param:
                self.entry.labels[param] = key
        else:
            self.entry.keys[param] = self.entry.spots[param] = self.entry.name_at
            self.entry.labels[param] = f"{param} (from the name)"


def _read_file(entry: Entry, pairs: _Pairs, m: _Mapper) -> None:
    m.check_keys(pairs, _FILE_KEYS)
    path = m.text(pairs, "path") or entry.name
    dirname, basename = m.text(pairs, "dirname"), m.text(pairs, "basename")
    if dirname or basename:
        head, _, tail = path.rpartition("/")
        path = (dirname or head + "/") + (basename or tail)
    directory = path.endswith("/") and path != "/"
    path_key = "path" if "path" in pairs else "dirname" if dirname else "basename"
    m.set("path", path.rstrip("/") if directory else path, pairs, path_key)
    state = m.text(pairs, "state")
    if state == "exists" or (directory and state == ""):
        m.set("state", "directory" if directory else "exists", pairs, "state")
    elif state == "absent":
        m.set("state", "absent", pairs, "state")
    elif state:
        m.problems.at(
            pairs["state"][1],
            f"state: mgmt file state '{state}' is not 'exists' or 'absent'",
            entry.id,
        )
        entry.broken = True
    if "content" in pairs and not is_null(pairs["content"][1]) and state != "absent":
        m.set("content", m.text(pairs, "content"), pairs, "content")
    source = m.text(pairs, "source")
    if source.endswith("/"):
        m.problems.at(
            pairs["source"][1],
            "source: copying a directory (a source ending in '/') is not supported "
            "by convergent yet",
            entry.id,
        )
        entry.broken = True
    elif source:
        m.set("source", source, pairs, "source")
    for key in ("mode", "owner", "group"):
        text = m.text(pairs, key)
        if text:
            m.set(key, text, pairs, key)
    if m.value(pairs, "force", lambda v: isinstance(v, bool), "true or false"):
        m.set("force", True, pairs, "force")
    for key, why in (
        ("recurse", "recursive copies are not supported by convergent yet"),
        ("purge", "purging unmanaged files is not supported by convergent yet"),
        ("symlink", "symbolic links are not supported by convergent yet"),
        ("fragments", "files built from fragments are not supported by convergent yet"),
    ):
        m.unsupported(pairs, key, why)


def _command(m: _Mapper, pairs: _Pairs, cmd_key: str, shell_key: str, default: str) -> list[str]:
    """An mgmt command as the argv mgmt runs: ``[shell, -c, cmd]`` or cmd split on spaces."""
    cmd = m.text(pairs, cmd_key) or default
    shell = m.text(pairs, shell_key)
    if shell:
        return [shell, "-c", cmd]
    return cmd.split()


def _read_exec(entry: Entry, pairs: _Pairs, m: _Mapper) -> None:
    m.check_keys(pairs, _EXEC_KEYS)
    argv = _command(m, pairs, "cmd", "shell", entry.name)
    args = m.value(
        pairs,
        "args",
        lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
        "a list of strings",
    )
    if args:
        if m.text(pairs, "shell") or len(argv) > 1:
            m.problems.at(
                pairs["args"][0],
                "mgmt args: only with a cmd of one word and no shell (as in mgmt)",
                entry.id,
            )
            entry.broken = True
        argv = argv + list(args)
    if not argv:
        m.problems.at(entry.name_at, "cmd: the command is empty", entry.id)
        entry.broken = True
    m.set("cmd", argv, pairs, "cmd")
    cwd = m.text(pairs, "cwd")
    if cwd:
        m.set("cwd", cwd, pairs, "cwd")
    timeout = m.value(pairs, "timeout", lambda v: isinstance(v, int) and v >= 0, "seconds (>= 0)")
    if timeout:
        m.set("timeout", timeout, pairs, "timeout")
    else:  # mgmt runs without a time limit unless given one (convergent's exec: 300 s)
        m.entry.params["timeout"] = None
    if m.text(pairs, "ifcmd"):
        ifcwd = m.text(pairs, "ifcwd")
        if ifcwd and ifcwd != cwd:
            m.problems.at(
                pairs["ifcwd"][0],
                "mgmt ifcwd: convergent runs onlyif in the command's cwd; "
                "remove ifcwd or make it the same as cwd",
                entry.id,
            )
            entry.broken = True
        m.set("onlyif", _command(m, pairs, "ifcmd", "ifshell", ""), pairs, "ifcmd")
    env = m.value(
        pairs,
        "env",
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "a mapping of names to strings",
    )
    if env:
        m.set("env", env, pairs, "env")
    creates = m.text(pairs, "creates")
    if creates:
        m.set("creates", creates, pairs, "creates")
    state = m.text(pairs, "state")
    if state not in ("", "present"):
        m.problems.at(
            pairs["state"][1], f"state: mgmt exec state '{state}' has no meaning here", entry.id
        )
        entry.broken = True
    for key, why in (
        ("watchcmd", "a watch command is not supported by convergent"),
        ("donecmd", "a command to run after cmd is not supported by convergent"),
        ("user", "running commands as another user is not supported by convergent yet"),
        ("group", "running commands as another group is not supported by convergent yet"),
        ("pollint", "use the engine's polling instead"),
    ):
        m.unsupported(pairs, key, why)


def _read_noop(entry: Entry, pairs: _Pairs, m: _Mapper) -> None:
    m.check_keys(pairs, ("comment",))


_Reader: TypeAlias = "Callable[[Entry, _Pairs, _Mapper], None]"
_READERS: dict[str, _Reader] = {"exec": _read_exec, "file": _read_file, "noop": _read_noop}


def _read_edges(node: Node, values: Values, links: list[Link]) -> None:
    problems = values.problems
    if is_null(node):
        return
    if not is_list(node):
        problems.at(node, f"'edges:' must be a list of edges, got {describe(node)}")
        return
    for item in node.value:
        if not is_mapping(item):
            problems.at(item, f"an edge is a mapping with from: and to:, got {describe(item)}")
            continue
        fields = {k: (kn, vn) for k, kn, vn in values.pairs(item)}
        for key, (key_node, _) in fields.items():
            if key not in _EDGE_KEYS:
                problems.at(key_node, f"unknown edge key '{key}'{close_match(key, _EDGE_KEYS)}")
        label = "edge"
        if "name" in fields and is_scalar(fields["name"][1]):
            label = f"edge '{values.text(fields['name'][1])}'"
        ends = [_edge_end(fields.get(key), key, item, label, values) for key in ("from", "to")]
        notify = False
        if "notify" in fields:
            notify_value = values.value(fields["notify"][1])
            if notify_value is not None and not isinstance(notify_value, bool):
                problems.at(fields["notify"][1], f"{label}: notify: expected true or false")
                continue
            notify = bool(notify_value)
        source, target = ends
        if source is not None and target is not None:
            links.append(Link(*source, *target, notify, label))


def _edge_end(
    found: tuple[Node, Node] | None, key: str, edge: Node, label: str, values: Values
) -> tuple[str, Location] | None:
    problems = values.problems
    if found is None:
        problems.at(edge, f"{label}: missing '{key}: {{kind: KIND, name: NAME}}'")
        return None
    node = found[1]
    if not is_mapping(node):
        problems.at(
            node, f"{label}: {key}: expected {{kind: KIND, name: NAME}}, got {describe(node)}"
        )
        return None
    fields = {k: vn for k, _, vn in values.pairs(node)}
    kind, name = fields.get("kind"), fields.get("name")
    if kind is None or name is None or not is_scalar(kind) or not is_scalar(name):
        problems.at(node, f"{label}: {key}: needs both kind: and name:")
        return None
    return format_id(values.text(kind).lower(), values.text(name)), values.at(name)
