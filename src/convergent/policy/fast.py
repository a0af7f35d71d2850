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
      - file: h01-0
        path: /srv/x/h01/h01-0
        meta: {export: true}
    collect:
      - kind: file
        pattern: /srv/x/h01/

A ``meta`` is read when it is a one-line flow mapping of word keys whose values are
``true``, ``false``, a decimal number or double-quoted text; a top-level ``collect:``
when its entries are ``kind`` and mgmt's ``pattern`` only.

:func:`load_plain` is a front end: it reads exactly that shape line by line into the
entries and links every front end produces (:mod:`convergent.policy.entries`), with the
locations of names and references, and hands them to the one builder,
:func:`convergent.policy.build.build`. It returns None, and the loader takes the full
path (libyaml nodes, every problem at its ``file:line:col``, its messages), as soon as
anything is outside the shape or wrong in any way: another top-level key (or one twice),
a nested value (a ``where:``, a meta list, a number written otherwise), a flow list of
anything but double-quoted strings (or an empty one, or one not written ``["a", "b"]``),
an anchor, a tag, a comment after a value, a tab, a non-ASCII character, a line over
4,096 characters, an escape other than ``\\n \\t \\\\ \\"``, a plain word YAML would read
as a bool or null, any syntax of the policy language (``{{``, ``{%``, ``{#`` anywhere;
``for_each``, ``if``, ``template``, ``destroy``; a top-level key other than
``resources`` and ``collect``), a duplicate key, an entry key (``recv``, ``meta``, an
edge key) where an entry starts, ``recv``, ``meta`` as a block, a malformed reference,
or any problem the builder finds (a duplicate resource, an unknown kind or parameter, a
rejected value, an edge to no entry, a cycle). So the fast path never changes what a
policy means or how a problem is reported; it only skips importing PyYAML (~14 ms) and
building a node per scalar. Two problems it reports itself, as the full path would,
because the full path would have to read all of a large policy first: more values than
:data:`~convergent.policy.entries.MAX_NODES` (it counts the values YAML would compose,
and stops at the same one), and more entries than
:data:`~convergent.policy.entries.MAX_RESOURCES` (the builder's problem, found before it
converts any entry). ``tests/policy/test_fast.py`` checks
that both paths give equal graphs, ``tests/policy/test_pipeline.py`` that they give the
builder equal entries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from sys import intern
from typing import Any

from convergent.errors import PolicyError
from convergent.graph.collect import Collect, normal_path
from convergent.graph.core import Graph
from convergent.graph.identity import format_id, parse_ref
from convergent.policy.build import build, too_many
from convergent.policy.entries import (
    EDGE_KEYS,
    ENTRY_KEY_NAMES,
    MAX_NODES,
    MAX_RESOURCES,
    Entry,
    Link,
    Location,
    Problems,
    edge,
    too_many_values,
)
from convergent.resources.base import Resource, get_kind

__all__ = ["load_plain"]

# One line of an entry: indentation, "- " on an entry's first line, a key, then a
# double-quoted, single-quoted or plain value (printable ASCII only: YAML rejects
# control characters and DEL), then nothing but spaces.
# Inside double quotes: runs of plain characters between escapes (one repeat each, not
# an alternative per character: the same strings, matched in less than half the time).
_PLAIN = r"[ !#-\[\]-~]*"
_CHARS = rf'{_PLAIN}(?:\\[nt\\"]{_PLAIN})*'
_DOUBLE = rf'"({_CHARS})"'
_FLOW = rf'"{_CHARS}"(?:, "{_CHARS}")*'  # the strings of a flow list, "a", "b"
# A flow mapping (meta only): word keys, values true, false, a decimal number or text.
_SCALAR = rf'(?:true|false|0|[1-9][0-9]{{0,8}}|"{_CHARS}")'
_MAP = rf"[a-z_][a-z0-9_]*: {_SCALAR}(?:, [a-z_][a-z0-9_]*: {_SCALAR})*"
_LINE = re.compile(
    r"( *)(- )?([a-z_][a-z0-9_]*): "
    rf"(?:{_DOUBLE}"
    r"|'([ -&(-~]*(?:''[ -&(-~]*)*)'"
    r"|([A-Za-z/][A-Za-z0-9_./-]*)"
    rf"|\[({_FLOW})\]) *"
)
# Compiled on first use (re caches them): a policy without flow lists, comment lines or
# meta mappings does not pay for compiling them (0.7 M and 0.4 M instructions; _LINE is
# 2.8 M).
_ITEM = _DOUBLE  # one string of a flow list
_COMMENT = r" *#[ -~]*"  # a comment-only line (no control character)
_META_LINE = rf"( *)meta: \{{({_MAP})\}} *"  # a meta flow mapping
_PAIR = rf"([a-z_][a-z0-9_]*): (?:(true|false)|([0-9]+)|{_DOUBLE})"  # one pair of it
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
_EDGE_KEYS = frozenset(EDGE_KEYS)
_at = tuple.__new__  # Location(...) without the call through its __new__: half the time
_NESTED = ENTRY_KEY_NAMES - _EDGE_KEYS  # keys whose values are mappings: the full path's
_SHARED_LENGTH = 16  # parameter values this short are shared (modes, owners, states)
_SHARED_KEPT = 1024  # distinct short values a load remembers to share
_LANGUAGE = frozenset(("for_each", "if", "template"))  # the policy language's entry keys
_SECTIONS = frozenset(("resources", "collect"))  # the top-level keys the fast path reads
_NOT_PARAMS = _NESTED | _LANGUAGE


def _unescape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group(1)]


def _text(double: str) -> str:
    if "\\" not in double:
        return double
    if double.count("\\") == double.count("\\n"):  # every backslash starts a \n
        return double.replace("\\n", "\n")
    return _ESCAPE.sub(_unescape, double)


def load_plain(text: str, filename: str = "<policy>") -> Graph[Resource[Any]] | None:
    """The graph of a policy in the plain shape, or None to take the full loader."""
    if not text.isascii() or "\r" in text or "{{" in text or "{%" in text or "{#" in text:
        return None  # templates are the language's (policy/lang.py)
    entries: list[Entry] = []
    links: list[Link] = []
    entry: Entry | None = None
    keys: set[str] = set()  # the keys the entry has
    shared: dict[str, str] = {}  # short values seen, to share one string between entries
    dash = -1
    section = ""  # the top-level key whose lines these are: resources or collect
    seen: set[str] = set()
    collect = _CollectReader()
    line_match = _LINE.fullmatch
    values = 1  # the values YAML composes from the lines so far: the top-level mapping...
    most, most_entries = MAX_NODES, MAX_RESOURCES
    problems = Problems(filename)  # only the limits' before the builder's
    for number, line in enumerate(_lines(text), 1):
        if len(line) > _LONGEST:
            return None
        match = line_match(line) if section else None  # the usual line: an entry's
        if match is None:
            start = line[:1]
            if start == " ":
                start = line.lstrip(" ")[:1]
            elif start and start not in "#-":  # a top-level key
                section = line.rstrip(" ")[:-1]
                if line.rstrip(" ")[-1:] != ":" or section not in _SECTIONS or section in seen:
                    return None
                seen.add(section)
                values += 2  # ...each top-level key and its list...
                continue
            if not start:  # blank
                continue
            if start == "#":
                if re.fullmatch(_COMMENT, line) is None:
                    return None
                continue
            if section != "resources" or "{" not in line:
                return None
            meta = _meta_line(line)
            if meta is None or entry is None or "meta" in keys or meta[0] != dash + 2:
                return None
            keys.add("meta")
            entry.meta = meta[1]
            values += 2 + 2 * len(meta[1])  # ...a meta key and its mapping of pairs...
            continue
        if section == "collect":
            if not collect.line(match):
                return None
            values += 3 if match.group(2) else 2
            continue
        indent, item, key, double, single, plain, flow = match.groups()
        key = intern(key)  # "file", "content": one string each, not one per entry
        value: Any
        if double is not None:
            value = _text(double) if "\\" in double else double
        elif flow is not None:
            if item:
                return None  # a list as a resource's name
            value = [_text(m.group(1)) for m in re.finditer(_ITEM, flow)]
            values += len(value)  # ...the strings of a list...
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
            if key in ENTRY_KEY_NAMES or not value.strip():
                return None  # the full path explains what an entry starts with
            values += 1  # ...each entry's mapping...
            if values > most:
                _too_many_values(filename)
            if len(entries) > most_entries and too_many(entries, problems):
                raise PolicyError(problems.sorted())  # where libyaml's composer stops too
            values += 2  # ...its first key and value...
            kind_at = _at(Location, (filename, number, dash + 3))
            name_at = _at(Location, (filename, number, match.end(3) + 3))
            entry = Entry.plain(key, value, kind_at, name_at)
            entries.append(entry)
            keys = {key}
            continue
        if entry is None or len(indent) != dash + 2 or key in keys or key in _NOT_PARAMS:
            return None
        values += 2  # ...and each other key and its value
        if key in _EDGE_KEYS:
            keys.add(key)
            rid = entry.id
            for ref, ref_at in _refs(value, match, filename, number):
                try:
                    other = format_id(*parse_ref(ref))
                except ValueError:
                    return None
                source, target, notify = edge(key, (rid, entry.name_at), (other, ref_at))
                links.append(Link(*source, *target, notify, key, rid))
        else:
            keys.add(key)
            if type(value) is str and len(value) <= _SHARED_LENGTH:
                value = shared.get(value, value)  # "0644", "root": one string for all
                if len(shared) < _SHARED_KEPT:
                    shared[value] = value
            entry.params[key] = value
    if values > most:
        _too_many_values(filename)
    if not entries or "resources" not in seen:
        return None
    collects = collect.done() if "collect" in seen else ()
    if collects is None:
        return None
    if too_many(entries, problems):  # the full path would compose it all to say so
        raise PolicyError(problems.sorted())
    return build(entries, links, problems, collects)  # None: the full path reports


def _too_many_values(filename: str) -> None:
    """Refuse the policy as the full path does when libyaml composes its value past
    :data:`MAX_NODES` (before anything else about it is known)."""
    problems = Problems(filename)
    problems.add(1, 1, too_many_values())
    raise PolicyError(problems.sorted())


def _meta_line(line: str) -> tuple[int, dict[str, Any]] | None:
    """A ``meta: {...}`` line's indentation and values as YAML reads them, or None (not
    that shape, a key twice, a key YAML reads as a bool)."""
    match = re.fullmatch(_META_LINE, line)
    if match is None:
        return None
    meta: dict[str, Any] = {}
    for pair in re.finditer(_PAIR, match.group(2)):
        key, word, number, double = pair.groups()
        if key in _NOT_TEXT or key in meta:
            return None
        meta[key] = word == "true" if word else int(number) if number else _text(double)
    return len(match.group(1)), meta


class _CollectReader:
    """The lines of a top-level ``collect:`` list in the plain shape: entries of ``kind``
    and mgmt's ``pattern`` (a ``where`` mapping is the full path's)."""

    __slots__ = ("dash", "found")

    def __init__(self) -> None:
        self.dash = -1
        self.found: list[dict[str, str]] = []

    def line(self, match: re.Match[str]) -> bool:
        """Take one line; False when it is outside the shape."""
        indent, item, key, double, plain = match.group(1, 2, 3, 4, 6)
        value = _text(double) if double is not None else plain  # None: quoted otherwise
        if value is None or key not in ("kind", "pattern") or plain in _NOT_TEXT:
            return False
        if item:
            if self.dash < 0:
                self.dash = len(indent)
            elif len(indent) != self.dash:
                return False
            self.found.append({key: value})
            return True
        if not self.found or len(indent) != self.dash + 2 or key in self.found[-1]:
            return False
        self.found[-1][key] = value
        return True

    def done(self) -> tuple[Collect, ...] | None:
        """The entries, or None when one would be a problem (the full path says which)."""
        if not self.found:
            return None
        result = []
        for entry in self.found:
            kind, pattern = entry.get("kind"), entry.get("pattern")
            if not kind or pattern is None or normal_path(pattern) is None:
                return None
            if get_kind(kind) is None:
                return None
            result.append(Collect(kind=kind, pattern=pattern))
        return tuple(result)


def _lines(text: str) -> Iterator[str]:
    """``text.split("\\n")`` one line at a time: a list of every line of a 100,000-entry
    policy took ~25 MiB at the peak of its load."""
    start, end = 0, len(text)
    find = text.find
    while True:
        stop = find("\n", start)
        if stop < 0:
            yield text[start:end]
            return
        yield text[start:stop]
        start = stop + 1


def _refs(
    value: str | list[str], match: re.Match[str], filename: str, number: int
) -> list[tuple[str, Location]]:
    """The references an edge key's value holds, each with where it is written."""
    if isinstance(value, str):
        return [(value, Location(filename, number, match.end(3) + 3))]
    offset = match.start(7) + 1
    return [
        (text, Location(filename, number, offset + m.start()))
        for text, m in zip(value, re.finditer(_ITEM, match.group(7)), strict=True)
    ]
