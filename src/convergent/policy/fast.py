"""The fast path of the loader: the plainest policies, read without YAML machinery.

Most policies, and every generated one, are a ``resources:`` list of flat entries, one
``key: value`` per line with quoted or plain-word values, or a one-line list of
double-quoted strings; ``require``/``before``/``notify`` name other entries::

    resources:
      - file: "/srv/f0001"
        content: "i am f0001\\n"
        mode: "0644"
      - exec: reload
        cmd: ["/bin/sh", "-c", "make reload"]
        require: ["file[/srv/f0001]"]

:func:`load_plain` reads exactly that shape line by line and builds the graph the way
:func:`convergent.policy.build.build` does. It returns None, and the loader takes the
full path (libyaml nodes, every problem at its ``file:line:col``), as soon as anything
is outside the shape or wrong in any way: another top-level key, a nested value, a flow
list of anything but double-quoted strings (or an empty one, or one not written
``["a", "b"]``), an anchor, a tag, a comment after a value, a tab, a non-ASCII character,
an escape other than ``\\n \\t \\\\ \\"``, a plain word YAML would read as a bool or
null, a duplicate key or resource, ``recv``, ``meta``, an edge to something that is not
an entry or that closes a cycle, a malformed reference, an unknown kind or parameter, a
parameter a kind rejects. So the fast path never changes what a policy
means or how a problem is reported; it only skips importing PyYAML (~14 ms) and building
a node per scalar. ``tests/policy/test_fast.py`` checks that both paths give equal graphs.
"""

from __future__ import annotations

import re
from typing import Any

from convergent.errors import GraphError, ParamError
from convergent.graph.core import Graph
from convergent.graph.identity import format_id, parse_ref
from convergent.resources.base import Meta, Resource, convert_params, get_kind, param_fields

__all__ = ["load_plain"]

# One line of an entry: indentation, "- " on an entry's first line, a key, then a
# double-quoted, single-quoted or plain value (printable ASCII only: YAML rejects
# control characters and DEL), then nothing but spaces.
_CHARS = r'(?:[ !#-\[\]-~]|\\[nt\\"])*'  # inside double quotes
_DOUBLE = rf'"({_CHARS})"'
_FLOW = rf'"{_CHARS}"(?:, "{_CHARS}")*'  # the strings of a flow list, "a", "b"
_LINE = re.compile(
    r"( *)(- )?([a-z_][a-z0-9_]*): "
    rf"(?:{_DOUBLE}"
    r"|'((?:[ -&(-~]|'')*)'"
    r"|([A-Za-z/][A-Za-z0-9_./-]*)"
    rf"|\[({_FLOW})\]) *"
)
_ITEM = re.compile(_DOUBLE)  # one string of a flow list
_COMMENT = re.compile(r" *#[ -~]*")  # a comment-only line (no control character)
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}
# Plain words YAML 1.1 reads as bool or null (PyYAML's implicit resolvers): not text.
_NOT_TEXT = frozenset(
    spelling
    for word in ("yes", "no", "true", "false", "on", "off", "null")
    for spelling in (word, word.capitalize(), word.upper())
)
# A longer line is left to the full path: the line regex needs memory in proportion to
# the length of what it matches (the 6.7 GB a 30 MB line once took), libyaml does not.
_LONGEST = 4096
_NOT_PARAMS = frozenset(("require", "before", "notify", "recv", "meta"))  # entry keys
_EDGES = ("require", "before", "notify")
_EDGES_KEYS = frozenset(_EDGES)


def _unescape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group(1)]


def _text(double: str) -> str:
    return _ESCAPE.sub(_unescape, double) if "\\" in double else double


def load_plain(text: str) -> Graph[Resource[Any]] | None:
    """The graph of a policy in the plain shape, or None to take the full loader."""
    if not text.isascii() or "\r" in text:
        return None
    entries: list[tuple[str, str, dict[str, Any]]] = []
    params: dict[str, Any] = {}
    top = dash = -1
    comment = _COMMENT.fullmatch
    line_match = _LINE.fullmatch
    for line in text.split("\n"):
        if len(line) > _LONGEST:
            return None
        start = line.lstrip(" ")[:1]
        if not start:  # blank
            continue
        if start == "#":
            if comment(line) is None:
                return None
            continue
        if top < 0:
            if line.rstrip(" ") != "resources:":
                return None
            top = 0
            continue
        match = line_match(line)
        if match is None:
            return None
        indent, item, key, double, single, plain, flow = match.groups()
        value: Any
        if double is not None:
            value = _text(double)
        elif flow is not None:
            if item:
                return None  # a list as a resource's name
            value = [_text(m.group(1)) for m in _ITEM.finditer(flow)]
        elif single is not None:
            value = single.replace("''", "'")
        elif plain in _NOT_TEXT:
            return None
        else:
            value = plain
        if key in _NOT_TEXT:
            return None
        if item:
            if dash < 0:
                dash = len(indent)
            elif len(indent) != dash:
                return None
            params = {}
            entries.append((key, value, params))
        elif not entries or len(indent) != dash + 2 or key in params or key == entries[-1][0]:
            return None
        else:
            params[key] = value
    if not entries:
        return None
    return _build(entries)


def _build(entries: list[tuple[str, str, dict[str, Any]]]) -> Graph[Resource[Any]] | None:
    """What ``build`` makes of these entries when none has a problem; else None."""
    graph: Graph[Resource[Any]] = Graph()
    fields: dict[str, frozenset[str]] = {}
    links: list[tuple[str, str, bool]] = []
    for kind, name, params in entries:
        if not _EDGES_KEYS.isdisjoint(params):
            params = dict(params)
            rid = format_id(kind, name)
            for key in _EDGES:
                refs = params.pop(key, None)
                if refs is None:
                    continue
                for ref in [refs] if isinstance(refs, str) else refs:
                    try:
                        other = format_id(*parse_ref(ref))
                    except ValueError:
                        return None
                    if key == "require":
                        links.append((other, rid, False))
                    else:
                        links.append((rid, other, key == "notify"))
        cls = get_kind(kind)
        if cls is None or not name.strip() or format_id(kind, name) in graph:
            return None
        known = fields.get(kind)
        if known is None:
            known = fields[kind] = frozenset(param_fields(cls.params_type))
        if not known.issuperset(params) or not _NOT_PARAMS.isdisjoint(params):
            return None
        try:
            resource = cls(name, convert_params(cls.params_type, params), meta=Meta())
        except ParamError:
            return None
        graph.add(resource)
    for source, target, notify in links:
        if source not in graph or target not in graph:
            return None
        graph.add_edge(source, target, notify=notify)
    if links:
        try:
            graph.validate()
        except GraphError:  # a cycle: the full path reports it where it was written
            return None
    return graph
