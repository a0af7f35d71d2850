"""``include: [common.yaml, roles/*.yaml]``: a policy in several files.

Each name is relative to the directory of the file that includes it; a pattern takes
the files it matches, sorted (a pattern that matches nothing is an error, as a missing
file is). An included file has the top-level keys of a policy (``resources`` optional);
its vars, classes, bundles, resources and collect entries join the including policy's,
included files first, in the order written. A file that includes itself, directly or
through others, is refused with the chain. Every problem in an included file is reported
at that file's own ``file:line:col``.
"""

from __future__ import annotations

import glob
import io
import os
from typing import TYPE_CHECKING

from convergent.policy.entries import MAX_NODES, TOP_KEYS
from convergent.policy.nodes import (
    TooManyValues,
    Values,
    compose,
    describe,
    expanded_size,
    is_list,
    is_mapping,
    is_scalar,
    mask_flow_refs,
)
from convergent.policy.suggest import close_match

if TYPE_CHECKING:
    from yaml.nodes import MappingNode, Node

__all__ = ["Doc", "gather"]

#: The most files one policy may include, in all.
MAX_FILES = 1000


class Doc:
    """One file of a policy: its top-level keys (key -> (key node, value node))."""

    __slots__ = ("file", "keys", "values")

    def __init__(self, file: str, keys: dict[str, tuple[Node, Node]], values: Values) -> None:
        self.file = file
        self.keys = keys
        self.values = values


class _Seen:
    """What a policy's walk has read so far: the real paths of its files, and how many
    more values its files may be written with (:data:`MAX_NODES` in all)."""

    __slots__ = ("files", "values_left")

    def __init__(self, values_left: int) -> None:
        self.files: set[str] = set()
        self.values_left = values_left


def gather(root: MappingNode, values: Values) -> list[Doc]:
    """Every file of the policy whose root is ``root``, included ones first."""
    docs: list[Doc] = []
    main = values.problems.filename
    seen = _Seen(MAX_NODES - expanded_size(root)[0])
    _walk(root, values, main, [os.path.realpath(main)], docs, seen)
    return docs


def _walk(
    root: MappingNode,
    values: Values,
    file: str,
    chain: list[str],
    docs: list[Doc],
    seen: _Seen,
) -> None:
    problems = values.problems
    keys: dict[str, tuple[Node, Node]] = {}
    for key, key_node, value_node in values.pairs(root):
        if key not in TOP_KEYS:
            problems.at(
                key_node,
                f"unknown top-level key '{key}'{close_match(key, TOP_KEYS)}; "
                f"a policy has the top-level keys {', '.join(TOP_KEYS)}",
            )
            continue
        keys[key] = (key_node, value_node)
    if "include" in keys:
        node = keys["include"][1]
        items = node.value if is_list(node) else [node]
        for item in items:
            if not is_scalar(item) or not item.value:
                problems.at(item, f"include: expected a file name or pattern, got {describe(item)}")
                continue
            for path in _paths(item, file, values):
                real = os.path.realpath(path)
                if real in chain:
                    shown = " -> ".join([*(_short(p) for p in chain[chain.index(real) :]), path])
                    problems.at(item, f"include cycle: {shown}; remove one of these includes")
                    continue
                if real in seen.files:
                    continue  # included twice (a diamond): read once
                seen.files.add(real)
                if len(seen.files) > MAX_FILES:
                    problems.at(item, f"a policy includes at most {MAX_FILES} files")
                    return
                _include(path, item, values, [*chain, real], docs, seen)
    docs.append(Doc(file, keys, values))


def _short(path: str) -> str:
    return os.path.relpath(path) if not path.startswith("..") else path


def _paths(item: Node, file: str, values: Values) -> list[str]:
    base = os.path.dirname(file)
    pattern = os.path.normpath(os.path.join(base, values.text(item)))
    if glob.has_magic(pattern):
        found = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not found:
            values.problems.at(item, f"include: no file matches {pattern}")
        return found
    if not os.path.isfile(pattern):
        values.problems.at(
            item, f"include: no file {pattern}; a name is relative to the including file"
        )
        return []
    return [pattern]


def _include(
    path: str, at: Node, values: Values, chain: list[str], docs: list[Doc], seen: _Seen
) -> None:
    from convergent.policy.entries import MAX_POLICY_BYTES

    problems = values.problems
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.at(at, f"include: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        return
    if len(data) > MAX_POLICY_BYTES:
        problems.at(at, f"include: {path} is over {MAX_POLICY_BYTES:,} bytes")
        return
    import yaml

    masked = mask_flow_refs(text)
    stream = io.StringIO(masked if masked is not None else text)
    stream.name = path  # the marks of its nodes name the file
    try:
        root = compose(stream, seen.values_left, entries=False)  # counted as made
    except TooManyValues as exc:
        problems.at(at, f"include: {path}: {exc}")
        return
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        from convergent.policy.entries import Location

        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problems.at(Location(path, line, col), f"YAML syntax error: {exc.problem or exc}")
        return
    except yaml.YAMLError as exc:
        problems.at(at, f"include: {path}: YAML error: {exc}")
        return
    if root is None:
        return  # an empty file includes nothing
    from convergent.policy.entries import MAX_EXPANDED_NODES

    written, expanded = expanded_size(root)
    seen.values_left -= written
    if expanded > max(MAX_EXPANDED_NODES, 4 * written):
        problems.at(
            at, f"include: aliases make {path} stand for {expanded:,} values; write them out"
        )
        return
    if not is_mapping(root):
        problems.at(root, f"an included file is a mapping of top-level keys, not {describe(root)}")
        return
    _walk(root, Values(problems, masked is not None), path, chain, docs, seen)
