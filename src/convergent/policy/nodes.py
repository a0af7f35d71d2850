"""YAML nodes -> Python values, keeping the line and column every value came from.

The policy readers compose YAML into nodes (never into Python objects directly), walk
them, and build values here. Every problem found on the way is collected, with its
location, in a :class:`Problems` list; nothing stops at the first one.
"""

from __future__ import annotations

import re
from typing import IO, Any, TypeGuard

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from convergent.policy.entries import (
    MAX_NODES,
    MAX_RESOURCES,
    Location,
    Problems,
    mark_file,
    too_many_resources,
    too_many_values,
)

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

__all__ = [
    "MAP",
    "NULL",
    "SEQ",
    "STR",
    "TooManyResources",
    "TooManyValues",
    "Values",
    "compose",
    "describe",
    "entry_problem",
    "expanded_size",
    "is_list",
    "is_mapping",
    "is_null",
    "is_scalar",
    "load_value",
    "mask_flow_refs",
    "unmask",
]

_TAG = "tag:yaml.org,2002:"
STR = _TAG + "str"
SEQ = _TAG + "seq"
MAP = _TAG + "map"
NULL = _TAG + "null"
_BOOL = _TAG + "bool"
_INT = _TAG + "int"
_FLOAT = _TAG + "float"
_TIMESTAMP = _TAG + "timestamp"
_MERGE = _TAG + "merge"

# `require: [file[/a]]` and `recv: {content: password[db].password}` are what people
# write, but a plain scalar inside a YAML flow collection cannot contain brackets. Before
# parsing, the brackets of such references are swapped for two private-use characters
# (same length, so every mark stays right) and swapped back in every string value.
_OPEN, _CLOSE = "\ue000", "\ue001"
_UNMASK = str.maketrans({_OPEN: "[", _CLOSE: "]"})
_SPECIAL = re.compile(r"[\[\]{}'\"#]")
_REF_LIST = re.compile(
    r"^[ \t]*(?:-[ \t]+)?(?:require|before|notify|recv)[ \t]*:[ \t]*[\[{]", re.MULTILINE
)


_IMPLICIT = yaml.resolver.Resolver.yaml_implicit_resolvers
_NUMBERS = yaml.constructor.SafeConstructor()  # YAML 1.1 ints (0755, 0x1f, 1_000) and floats


class TooManyValues(yaml.YAMLError):
    """Raised by :func:`compose` at the first value past its limit; says so and what to do."""


class TooManyResources(yaml.YAMLError):
    """Raised by :func:`compose` once the top-level ``resources:`` list has more than
    :data:`MAX_RESOURCES` entries; ``entry`` is the first one past it."""

    def __init__(self, entry: Node) -> None:
        super().__init__(too_many_resources())
        self.entry = entry


class _Loader(_BaseLoader):
    """libyaml's safe loader with a leaner tag resolver (same tags as SafeLoader's), which
    counts the values it composes and the entries of the top-level ``resources:`` list."""

    values_left = MAX_NODES
    entries = True  # count the top-level resources: list (a policy without the language)
    _root: Node | None = None
    _entries: Any = None  # the top-level resources: list (a SequenceNode), once it has an entry
    _resources_next = False  # the value composed next is the top-level resources:

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """Called by the composer (libyaml's and PyYAML's alike) before it makes each value,
        whatever its tag, with the collection it goes in and its key or index; an alias
        makes none. No path resolvers are used here, so this is all it does: the counts
        stop the load before the nodes outgrow memory (a 16 MiB file can be written with
        millions of values, ~400 bytes each once composed)."""
        left = self.values_left - 1
        if left < 0:
            raise TooManyValues(too_many_values())
        self.values_left = left
        if current_node is None or not self.entries:
            return
        if self._root is None:
            self._root = current_node
        if current_node is self._root:
            self._resources_next = (
                type(current_index) is ScalarNode and current_index.value == "resources"
            )
        elif self._resources_next:
            self._resources_next = False
            if type(current_node) is SequenceNode:
                self._entries = current_node
        # past the limit, not at it: an alias item makes no call of its own
        if (
            type(current_index) is int
            and current_index > MAX_RESOURCES
            and current_node is self._entries
        ):
            raise TooManyResources(current_node.value[MAX_RESOURCES])

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                for tag, regexp in _IMPLICIT.get(value[:1], ()):
                    if regexp.match(value):
                        return str(tag)
            return STR
        return SEQ if kind is SequenceNode else MAP


def compose(text: str | IO[str], limit: int = MAX_NODES, *, entries: bool = True) -> Node | None:
    """The root node of the one YAML document in ``text`` (None when it is empty).

    Raises PyYAML's errors (``yaml.MarkedYAMLError``, ``yaml.reader.ReaderError``),
    :class:`TooManyValues` once more than ``limit`` values are composed (aliases aside:
    :func:`expanded_size` measures what they stand for), and, with ``entries``,
    :class:`TooManyResources` when an entry after the first one past
    :data:`MAX_RESOURCES` comes (one past it is the builder's to refuse, as the fast path
    does). Without ``entries`` (the language, whose ``if:`` may drop entries; variables)
    the list is left to whoever reads it.
    """
    loader = _Loader(text)
    loader.values_left = limit
    loader.entries = entries
    try:
        node: Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def entry_problem(entry: Node) -> tuple[Node, str | None]:
    """Where the builder reports a problem of a whole entry, and the entry's
    ``kind[name]``, from its nodes: its first key, and that key and its value as text
    (None when they are not both plain text)."""
    from convergent.graph.identity import format_id

    if not is_mapping(entry) or not entry.value:
        return entry, None
    key, value = entry.value[0]
    if not is_scalar(key) or not is_scalar(value):
        return key, None
    return key, format_id(str(key.value), str(value.value))


def load_value(text: str) -> Any:
    """``yaml.safe_load(text)`` within the policy's bounds: at most :data:`MAX_NODES`
    values written, and aliases standing for at most as many as a policy's may (a
    "billion laughs" in a variables file is refused here, not when a template renders it).
    Raises ``yaml.YAMLError``; :class:`TooManyValues` when over a bound."""
    from convergent.policy.entries import MAX_EXPANDED_NODES

    root = compose(text, entries=False)
    if root is None:
        return None
    written, expanded = expanded_size(root)
    if expanded > max(MAX_EXPANDED_NODES, 4 * written):
        raise TooManyValues(
            f"aliases ('*name') make it stand for {expanded:,} values, from {written:,} "
            f"written (the limit is {MAX_EXPANDED_NODES:,}, or four times the values "
            "written); write the repeated parts out, or use fewer aliases"
        )
    return yaml.constructor.SafeConstructor().construct_document(root)


def expanded_size(root: Node) -> tuple[int, int]:
    """``(written, expanded)``: the document's distinct nodes, and the nodes it stands for
    with every alias counted as a copy of what it names (a recursive alias counts 1).

    Linear in the written nodes (each subtree's size is computed once), so a few aliases of
    aliases (a "billion laughs") are measured without being expanded.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and sizes[key] > 0:
            continue
        if is_scalar(node):
            sizes[key] = 1
            continue
        kids = node.value if is_list(node) else [n for pair in node.value for n in pair]
        if children_done:
            sizes[key] = 1 + sum(sizes.get(id(kid), 1) or 1 for kid in kids)
            continue
        sizes[key] = 0  # under way: an alias back to it counts 1
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if id(kid) not in sizes)
    return len(sizes), sizes[id(root)]


def is_scalar(node: Node) -> TypeGuard[ScalarNode]:
    return isinstance(node, ScalarNode)


def is_list(node: Node) -> TypeGuard[SequenceNode]:
    return isinstance(node, SequenceNode)


def is_mapping(node: Node) -> TypeGuard[MappingNode]:
    return isinstance(node, MappingNode)


def is_null(node: Node) -> bool:
    """A scalar YAML reads as null: ``~``, ``null`` or nothing at all."""
    return isinstance(node, ScalarNode) and node.tag == NULL


def mask_flow_refs(text: str) -> str | None:
    """``text`` with the brackets of references inside ``[...]`` masked, or None if unchanged."""
    if _OPEN in text or _CLOSE in text or "[" not in text:
        return None
    marks: list[tuple[int, str]] = []
    search = _SPECIAL.search
    for match in _REF_LIST.finditer(text):
        depth, i = 1, match.end()
        while depth:
            found = search(text, i)
            if found is None:
                break
            i = found.start()
            c = text[i]
            if c == "[":
                depth += 1
                marks.append((i, _OPEN))
            elif c == "]":
                depth -= 1
                if depth:
                    marks.append((i, _CLOSE))
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "#":
                if text[i - 1] in " \t":
                    i = text.find("\n", i)
                    if i < 0:
                        break
            elif depth == 1 and _item_start(text, i):
                i = _quote_end(text, i)
            i += 1
    if not marks:
        return None
    pieces: list[str] = []
    last = 0
    for i, char in marks:
        pieces += (text[last:i], char)
        last = i + 1
    pieces.append(text[last:])
    return "".join(pieces)


def _item_start(text: str, i: int) -> bool:
    """True when the quote at ``i`` opens a flow item (it follows '[', '{', ',' or ':')."""
    j = i - 1
    while text[j] in " \t\n":
        j -= 1
    return text[j] in "[{,:"


def _quote_end(text: str, i: int) -> int:
    """Index of the quote that closes the quoted scalar opening at ``i`` (or the end)."""
    quote = text[i]
    j = i + 1
    while True:
        end = text.find(quote, j)
        if end < 0:
            return len(text)
        if quote == "'" and text.startswith("''", end):
            j = end + 2
            continue
        if quote == '"':
            slashes = 0
            while text[end - 1 - slashes] == "\\":
                slashes += 1
            if slashes % 2:
                j = end + 1
                continue
        return end


def unmask(text: str) -> str:
    """Undo :func:`mask_flow_refs` in one string (error messages included)."""
    return text.translate(_UNMASK)


def describe(node: Node) -> str:
    """What a node is, in the words of the error messages: a list, a mapping, 'text'."""
    if node.tag == SEQ or is_list(node):
        return "a list"
    if node.tag == MAP or is_mapping(node):
        return "a mapping"
    if node.tag == NULL:
        return "nothing (null)"
    value: str = node.value
    return f"'{unmask(value)}'" if len(value) < 60 else f"'{unmask(value[:57])}...'"


class Values:
    """Builds plain Python values from nodes, reporting what YAML cannot mean here.

    Scalars follow YAML 1.1 as PyYAML's safe loader resolves them, except timestamps,
    which stay text. Aliases are resolved (each node converted once) and ``<<`` merge
    keys are honoured; duplicate keys, unknown tags and recursive aliases are problems.
    """

    __slots__ = ("_done", "_masked", "_open", "_places", "_spotted", "problems")

    def __init__(self, problems: Problems, masked: bool) -> None:
        self.problems = problems
        self._masked = masked
        # id(node) -> (node, its value): the node is kept, so that its id is not reused by
        # another node (a rendered template's, made and dropped during the load) meanwhile
        self._done: dict[int, tuple[Node, Any]] = {}
        self._open: set[int] = set()
        self._spotted: dict[int, Node] = {}  # id(node) -> node, kept for the same reason
        # mark -> its Location: the entries for_each makes share the marks of one entry
        self._places: dict[int, tuple[Any, Location]] = {}

    def at(self, node: Node) -> Location:
        """Where ``node`` is written."""
        mark = node.start_mark
        found = self._places.get(id(mark))
        if found is not None and found[0] is mark:
            return found[1]
        place = Location(mark_file(mark, self.problems.filename), mark.line + 1, mark.column + 1)
        self._places[id(mark)] = (mark, place)
        return place

    def spots(
        self, node: Node, path: str, spots: dict[str, Location], written: dict[str, str], shown: str
    ) -> None:
        """Record where ``node`` (at field ``path``) and every part of it are written.

        Numbers and bools also leave their text in ``written`` (under ``shown`` + path).
        A node met again through an alias records only its own place, so no policy makes
        this walk longer than the policy.
        """
        spots.setdefault(path, self.at(node))
        if is_scalar(node):
            if node.tag in (_INT, _FLOAT, _BOOL):
                written.setdefault(shown + path, node.value)
            return
        key = id(node)
        if self._spotted.get(key) is node:
            return
        self._spotted[key] = node
        if is_list(node):
            for i, item in enumerate(node.value):
                self.spots(item, f"{path}[{i}]", spots, written, shown)
        elif is_mapping(node):
            for key_node, value_node in node.value:
                if is_scalar(key_node):
                    inner = f"{path}.{unmask(key_node.value)}"
                    self.spots(value_node, inner, spots, written, shown)

    def text(self, node: Node) -> str:
        """The scalar's text as written (for names and references)."""
        value: str = node.value
        if self._masked and (_OPEN in value or _CLOSE in value):
            return value.translate(_UNMASK)
        return value

    def pairs(self, node: Node, resource: str | None = None) -> list[tuple[str, Node, Node]]:
        """``(key, key node, value node)`` of a mapping node, merges expanded."""
        out: list[tuple[str, Node, Node]] = []
        seen: dict[str, Node] = {}
        merged: list[tuple[str, Node, Node]] = []
        masked = self._masked
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.extend(self._merge_pairs(value_node, resource))
                continue
            if not isinstance(key_node, ScalarNode):
                self.problems.at(
                    key_node, "a key must be a plain word, not a list or mapping", resource
                )
                continue
            key: str = key_node.value
            if masked:
                key = self.text(key_node)
            first = seen.get(key)
            if first is not None:
                self.problems.at(
                    key_node,
                    f"duplicate key '{key}' (first at line {first.start_mark.line + 1}); "
                    "keep only one of them",
                    resource,
                )
                continue
            seen[key] = key_node
            out.append((key, key_node, value_node))
        for key, key_node, value_node in merged:
            if key not in seen:
                seen[key] = key_node
                out.append((key, key_node, value_node))
        return out

    def _merge_pairs(self, node: Node, resource: str | None) -> list[tuple[str, Node, Node]]:
        sources = node.value if is_list(node) else [node]
        out: list[tuple[str, Node, Node]] = []
        for source in sources:
            if not is_mapping(source):
                self.problems.at(source, "'<<' merges a mapping (or a list of mappings)", resource)
                continue
            out.extend(self.pairs(source, resource))
        return out

    def value(self, node: Node, resource: str | None = None) -> Any:
        """The Python value of ``node``: str, int, float, bool, None, list or dict."""
        if is_scalar(node):
            return self._scalar(node, resource)
        key = id(node)
        done = self._done.get(key)
        if done is not None and done[0] is node:
            return done[1]
        if key in self._open:
            self.problems.at(node, "an alias refers to the value that contains it", resource)
            return None
        self._open.add(key)
        result: Any
        if is_list(node):
            if node.tag != SEQ:
                self._bad_tag(node, resource)
            result = [self.value(item, resource) for item in node.value]
        else:
            if node.tag != MAP:
                self._bad_tag(node, resource)
            result = {k: self.value(v, resource) for k, _, v in self.pairs(node, resource)}
        self._open.discard(key)
        self._done[key] = (node, result)
        return result

    def _scalar(self, node: ScalarNode, resource: str | None) -> Any:
        tag = node.tag
        if tag in (STR, _TIMESTAMP):
            return self.text(node)
        if tag == NULL:
            return None
        if tag == _BOOL:
            return node.value.lower() in ("yes", "true", "on")
        if tag == _INT:
            return _NUMBERS.construct_yaml_int(node)
        if tag == _FLOAT:
            return _NUMBERS.construct_yaml_float(node)
        self._bad_tag(node, resource)
        return self.text(node)

    def _bad_tag(self, node: Node, resource: str | None) -> None:
        self.problems.at(
            node,
            f"unsupported YAML tag {node.tag}; remove the tag and write a plain value",
            resource,
        )
