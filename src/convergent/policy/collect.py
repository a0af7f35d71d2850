"""Reads the top-level ``collect:`` list of a policy (both formats) into
:class:`~convergent.graph.collect.Collect` entries, each problem at its place.

Native::

    collect:
      - kind: file
        where: {paths: [/srv/www/], names: ["web-*"]}

mgmt's yamlgraph::

    collect:
      - kind: file
        pattern: /tmp/mgmtA/      # a collected file goes there, under its own base name

A native entry needs ``where`` (or ``pattern``): what another host may write here is
always said. ``where: {}`` is refused; to take every export of a kind, say so with
``names: ["*"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from convergent.graph.collect import Collect, Where, normal_path
from convergent.policy.nodes import describe, is_list, is_mapping
from convergent.policy.suggest import close_match
from convergent.resources.base import get_kind, kinds

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.nodes import Values

__all__ = ["read_collect"]

_EXAMPLE = "e.g.\n  collect:\n    - kind: file\n      where: {paths: [/srv/www/]}"


def read_collect(node: Node, values: Values, *, native: bool) -> tuple[Collect, ...]:
    """The collect entries of ``collect: [...]`` (problems go to ``values.problems``)."""
    problems = values.problems
    if not is_list(node):
        problems.at(node, f"collect: expected a list of entries, got {describe(node)}; {_EXAMPLE}")
        return ()
    found: list[Collect] = []
    for item in node.value:
        if not is_mapping(item):
            problems.at(item, f"collect: an entry is a mapping, got {describe(item)}; {_EXAMPLE}")
            continue
        spec = _entry(item, values, native)
        if spec is not None:
            found.append(spec)
    return tuple(found)


def _entry(node: Node, values: Values, native: bool) -> Collect | None:
    problems = values.problems
    raw = values.value(node)
    keys = {key: key_node for key, key_node, _ in values.pairs(node)}
    allowed = ("kind", "where", "pattern") if native else ("kind", "pattern")
    ok = True
    for key, key_node in keys.items():
        if key not in allowed:
            problems.at(
                key_node,
                f"collect: unknown key '{key}'{close_match(key, allowed)}; "
                f"an entry takes: {', '.join(allowed)}",
            )
            ok = False
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        problems.at(node, "collect: an entry needs 'kind:', the kind of exports to collect")
        return None
    if get_kind(kind) is None:
        names = list(kinds())
        problems.at(
            node,
            f"collect: unknown resource kind '{kind}'{close_match(kind, names)}; "
            f"known kinds: {', '.join(names)}",
        )
        ok = False
    pattern = raw.get("pattern")
    if pattern is not None and (not isinstance(pattern, str) or normal_path(pattern) is None):
        problems.at(node, f"collect: pattern is a directory's absolute path, not {pattern!r}")
        ok = False
    where = raw.get("where")
    if native and where is None and pattern is None:
        problems.at(
            node,
            f"collect {kind}: say what other hosts may write here with 'where:' "
            "(kinds, names, paths), e.g. where: {paths: [/srv/www/]}; "
            'where: {names: ["*"]} takes every export of the kind',
        )
        return None
    try:
        limits = msgspec.convert(where, Where) if where is not None else None
    except msgspec.ValidationError as exc:
        problems.at(node, f"collect {kind}: where: {exc}; it takes kinds, names and paths lists")
        return None
    if limits is not None:
        if not (limits.kinds or limits.names or limits.paths):
            problems.at(
                node,
                f'collect {kind}: where: is empty; write names: ["*"] to take every export',
            )
            ok = False
        bad = [p for p in limits.paths if normal_path(p) is None]
        if bad:
            problems.at(node, f"collect {kind}: where: paths must be absolute, not {bad[0]!r}")
            ok = False
    if not ok:
        return None
    return Collect(kind=kind, where=limits, pattern=pattern)
