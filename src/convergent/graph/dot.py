"""Graphviz DOT export of a graph.

One node per resource; written edges solid (``notify`` ones dashed and labelled); the
automatic edges the engine adds (a directory before the file inside it) dotted and grey;
each bundle use (``Graph.clusters``) a box around its resources, nested as the uses are;
each automatic group the engine makes (one package transaction for several packages) a
dashed box around its members, or, when its members sit in different bundles, grey
undirected lines joining them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from convergent.graph.core import Edge, Graph

__all__ = ["to_dot"]


def _visible(char: str) -> str:
    """A control character as a visible escape (a DOT ``\\\\`` is one backslash)."""
    code = ord(char)
    return f"\\\\x{code:02x}" if code < 0x100 else f"\\\\u{code:04x}"


def _quote(text: str) -> str:
    """A DOT string: quotes and backslashes escaped, control characters (a newline, an
    escape code, a line or bidi separator) made visible, never passed on raw."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _visible(c) for c in text)
    return '"' + text + '"'


def _innermost(clusters: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    """``(vertex -> its innermost cluster, cluster -> the cluster it is inside)``."""
    order = sorted(clusters, key=lambda c: len(clusters[c]), reverse=True)
    home: dict[str, str] = {}
    parent: dict[str, str] = {}
    for cluster in order:  # larger first: a smaller one inside it overrides
        for vid in clusters[cluster]:
            if vid in home and cluster != home[vid]:
                parent.setdefault(cluster, home[vid])
            home[vid] = cluster
    return home, parent


def to_dot(
    graph: Graph[Any],
    name: str = "convergent",
    *,
    auto_edges: Iterable[Edge] = (),
    groups: Iterable[Sequence[str]] = (),
) -> str:
    """Render ``graph`` as DOT (see the module docstring). ``auto_edges``: the edges the
    engine would add; ``groups``: the members of each automatic group."""
    lines = [
        f"digraph {_quote(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, fontname="monospace"];',
    ]
    clusters = {c: ids for c, ids in graph.clusters.items() if ids}
    home, parent = _innermost(clusters)
    boxed: dict[str, list[str]] = {}  # cluster -> its own lines
    loose: list[str] = []
    crossing: list[Sequence[str]] = []
    for number, members in enumerate(groups):
        places = {home.get(vid) for vid in members}
        if len(places) != 1:
            crossing.append(members)
            continue
        label = _quote(f"autogroup {number + 1}")
        body = [f"subgraph {_quote(f'cluster_group_{number}')} {{", f"  label={label};"]
        body += ["  style=dashed;", '  color="gray40";']
        body += [f"  {_quote(vid)};" for vid in members]
        body.append("}")
        where = places.pop()
        (boxed.setdefault(where, []) if where is not None else loose).extend(body)
    for vid in graph:
        cluster = home.get(vid)
        (boxed.setdefault(cluster, []) if cluster is not None else loose).append(f"{_quote(vid)};")
    children: dict[str | None, list[str]] = {}
    for cluster in clusters:
        children.setdefault(parent.get(cluster), []).append(cluster)
    numbers = {cluster: i for i, cluster in enumerate(clusters)}

    def emit(cluster: str, indent: str) -> None:
        lines.append(f"{indent}subgraph {_quote(f'cluster_{numbers[cluster]}')} {{")
        lines.append(f"{indent}  label={_quote(cluster)};")
        lines.append(f"{indent}  style=rounded;")
        lines.extend(f"{indent}  {line}" for line in boxed.get(cluster, ()))
        for inner in children.get(cluster, ()):
            emit(inner, indent + "  ")
        lines.append(f"{indent}}}")

    lines.extend(f"  {line}" for line in loose)
    for cluster in children.get(None, ()):
        emit(cluster, "  ")
    for edge in graph.edges():
        attrs = ' [style=dashed, label="notify"]' if edge.notify else ""
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)}{attrs};")
    for edge in auto_edges:
        if graph.edge(edge.source, edge.target) is None:
            attrs = '[style=dotted, color="gray40", tooltip="automatic edge"]'
            lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)} {attrs};")
    for members in crossing:
        for a, b in itertools.pairwise(members):
            attrs = '[dir=none, style=dashed, color="gray40", label="autogroup"]'
            lines.append(f"  {_quote(a)} -> {_quote(b)} {attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"
