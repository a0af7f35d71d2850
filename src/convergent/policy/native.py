"""Reads convergent's own policy format into entries and links.

::

    resources:
      - file: /tmp/demo/f1          # first key: the kind; its value: the name
        content: "i am f1\\n"
      - exec: build
        cmd: [touch, /tmp/demo/built]
        require: [file[/tmp/demo/f1]]
        notify: noop[done]          # one reference or a list of them
        meta: {noop: true}
      - noop: done
      - file: /tmp/demo/out
        recv:                       # parameter: kind[name].output
          content: exec[build].stdout

``require``: these run first. ``before``: this runs first. ``notify``: this runs first
and sends them a refresh when it changed something. ``recv``: parameters whose value is
an output of another resource, which runs first. ``meta``: the engine's meta
parameters. Every other key is a parameter of the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergent.graph.core import parse_output_ref
from convergent.graph.identity import format_id, parse_ref
from convergent.policy.entries import (
    EDGE_KEYS,
    ENTRY_KEY_NAMES,
    MAX_RESOURCES,
    TOP_KEYS,
    Entry,
    Link,
    Location,
    Problems,
    Recv,
    edge,
    too_many_resources,
)
from convergent.policy.nodes import (
    STR,
    Values,
    describe,
    entry_problem,
    is_list,
    is_mapping,
    is_null,
    is_scalar,
)
from convergent.policy.suggest import close_match
from convergent.resources.base import get_kind

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.graph.collect import Collect

__all__ = ["read_entry", "read_native"]

_TOP_KEYS = TOP_KEYS
_EXAMPLE = 'e.g.\n  resources:\n    - file: /etc/motd\n      content: "hello\\n"'


def read_native(root: Node, values: Values) -> tuple[list[Entry], list[Link], tuple[Collect, ...]]:
    """Entries, links and collect entries of a policy whose top level is the mapping
    ``root``."""
    problems = values.problems
    entries: list[Entry] = []
    links: list[Link] = []
    collect: tuple[Collect, ...] = ()
    resources: Node | None = None
    for key, key_node, value_node in values.pairs(root):
        if key == "resources":
            resources = value_node
        elif key == "collect":
            from convergent.policy.collect import read_collect

            collect = read_collect(value_node, values, native=True)
        else:
            problems.at(
                key_node,
                f"unknown top-level key '{key}'{close_match(key, _TOP_KEYS)}; "
                f"a policy has the top-level keys {', '.join(_TOP_KEYS)}",
            )
    if resources is None:
        problems.at(
            root, f"the policy has no 'resources:' key; list the resources under it, {_EXAMPLE}"
        )
        return entries, links, collect
    if not is_list(resources):
        _bad_resources(resources, problems)
        return entries, links, collect
    if len(resources.value) > MAX_RESOURCES:  # an aliased or merged list: before reading any
        where, rid = entry_problem(resources.value[MAX_RESOURCES])
        problems.at(where, too_many_resources(), rid)
        return entries, links, collect
    for item in resources.value:
        if not is_mapping(item):
            problems.at(
                item,
                f"a resource entry is a mapping whose first key is its kind, got {describe(item)}; "
                "write it as '- file: /etc/motd' with its parameters on the lines below",
            )
            continue
        read_entry(item, values, entries, links)
    return entries, links, collect


def _bad_resources(node: Node, problems: Problems) -> None:
    if is_scalar(node) and node.tag != STR:
        problems.at(
            node,
            "'resources:' is empty; write 'resources: []' for an empty policy, "
            "or list resources under it, one '- kind: name' entry each",
        )
    elif is_mapping(node):
        problems.at(
            node,
            "'resources:' must be a list of entries like '- file: /etc/motd', got a mapping; "
            "if this is an mgmt yamlgraph, add 'graph: NAME' at the top to load it as one",
        )
    else:
        problems.at(
            node,
            "'resources:' must be a list of entries like '- file: /etc/motd', "
            f"got {describe(node)}",
        )


def read_entry(node: Node, values: Values, entries: list[Entry], links: list[Link]) -> None:
    """Read one item of ``resources:`` into ``entries`` (and its edges into ``links``)."""
    problems = values.problems
    if not is_mapping(node):
        problems.at(
            node,
            f"a resource entry is a mapping whose first key is its kind, got {describe(node)}; "
            "write it as '- file: /etc/motd' with its parameters on the lines below",
        )
        return
    pairs = values.pairs(node)
    if not pairs:
        problems.at(node, "an empty resource entry; write '- kind: name', e.g. '- file: /etc/motd'")
        return
    kind, kind_node, name_node = pairs[0]
    if get_kind(kind) is None and kind not in ENTRY_KEY_NAMES:
        later = [k for k, _, _ in pairs[1:] if get_kind(k) is not None]
        if later:
            problems.at(
                kind_node,
                f"the first key of an entry is its kind: move '{later[0]}: ...' to the top "
                "of this entry",
            )
            return
    name = _name(kind, kind_node, name_node, values)
    if name is None:
        return
    name_at = values.at(name_node)
    entry = Entry(kind, name, values.at(kind_node), name_at)
    rid = entry.id
    if kind in ENTRY_KEY_NAMES:
        problems.at(
            kind_node,
            f"the first key of an entry is its kind, not '{kind}'; "
            "start the entry with '- kind: name', e.g. '- file: /etc/motd'",
        )
        entry.broken = True
    for key, key_node, value_node in pairs[1:]:
        if key in EDGE_KEYS:
            for ref, ref_at in _refs(key, value_node, values, rid):
                source, target, notify = edge(key, (rid, name_at), (ref, ref_at))
                links.append(Link(*source, *target, notify, key, rid))
        elif key == "recv":
            links.extend(_recv(value_node, values, rid, name_at))
        elif key == "destroy":
            entry.meta["destroy"] = values.value(value_node, rid)
            entry.meta_keys["destroy"] = values.at(key_node)
            values.spots(value_node, "destroy", entry.meta_spots, entry.written, "meta.")
        elif key == "meta":
            if not is_mapping(value_node):
                problems.at(
                    value_node,
                    "meta: expected a mapping like 'meta: {noop: true}', "
                    f"got {describe(value_node)}",
                    rid,
                )
                entry.broken = True
                continue
            for meta_key, meta_key_node, meta_value in values.pairs(value_node, rid):
                entry.meta[meta_key] = values.value(meta_value, rid)
                entry.meta_keys[meta_key] = values.at(meta_key_node)
                values.spots(meta_value, meta_key, entry.meta_spots, entry.written, "meta.")
        else:
            entry.params[key] = values.value(value_node, rid)
            entry.keys[key] = values.at(key_node)
            values.spots(value_node, key, entry.spots, entry.written, "")
    entries.append(entry)


def _name(kind: str, kind_node: Node, name_node: Node, values: Values) -> str | None:
    problems = values.problems
    if is_mapping(name_node):
        problems.at(
            name_node,
            f"the value of '{kind}:' is the resource's name, not a mapping; write "
            f"'- {kind}: NAME' and put its parameters on the next lines, aligned with '{kind}:'",
        )
        return None
    if not is_scalar(name_node) or is_null(name_node):
        problems.at(
            name_node if not is_scalar(name_node) else kind_node,
            f"the resource needs a name: write '- {kind}: NAME'",
        )
        return None
    name = values.text(name_node)
    if not name.strip():
        problems.at(name_node, f"the resource needs a non-empty name: write '- {kind}: NAME'")
        return None
    return name


def _recv(node: Node, values: Values, owner: str, owner_at: Location) -> list[Link]:
    """One link per received parameter of ``recv: {param: kind[name].output, ...}``."""
    problems = values.problems
    if not is_mapping(node):
        problems.at(
            node,
            "recv: expected a mapping of parameters to outputs, like\n"
            "  recv:\n    content: password[db].password\n"
            f"got {describe(node)}",
            owner,
        )
        return []
    links: list[Link] = []
    for param, param_node, value_node in values.pairs(node, owner):
        if not is_scalar(value_node) or value_node.tag != STR:
            problems.at(
                value_node,
                f"recv {param}: expected an output reference kind[name].output, "
                f"got {describe(value_node)}",
                owner,
            )
            continue
        text = values.text(value_node)
        try:
            sender, output = parse_output_ref(text)
            kind, name = parse_ref(sender)
        except ValueError:
            problems.at(
                value_node,
                f"recv {param}: '{text}' is not an output reference; write kind[name].output, "
                "e.g. password[db].password",
                owner,
            )
            continue
        value_at = values.at(value_node)
        recv = Recv(param, output, values.at(param_node), value_at)
        source = format_id(kind, name)
        links.append(Link(source, value_at, owner, owner_at, False, f"recv {param}", owner, recv))
    return links


def _refs(key: str, node: Node, values: Values, owner: str) -> list[tuple[str, Location]]:
    """The ``kind[name]`` identities a require/before/notify value names."""
    problems = values.problems
    if is_list(node):
        items = node.value
    elif is_scalar(node) and node.tag == STR:
        items = [node]
    else:
        problems.at(
            node,
            f"{key}: expected a reference kind[name] or a list of them, got {describe(node)}",
            owner,
        )
        return []
    out: list[tuple[str, Location]] = []
    for item in items:
        if not is_scalar(item) or item.tag != STR:
            problems.at(
                item, f"{key}: expected a reference kind[name], got {describe(item)}", owner
            )
            continue
        text = values.text(item)
        try:
            kind, name = parse_ref(text)
        except ValueError:
            problems.at(
                item,
                f"{key}: '{text}' is not a reference; write kind[name], e.g. file[/etc/motd]",
                owner,
            )
            continue
        out.append((format_id(kind, name), values.at(item)))
    return out
