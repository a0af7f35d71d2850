"""Graphviz DOT export of a graph."""

from __future__ import annotations

from typing import Any

from convergent.graph.core import Graph

__all__ = ["to_dot"]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph[Any], name: str = "convergent") -> str:
    """Render ``graph`` as DOT: one node per resource, notify edges dashed and labelled."""
    lines = [
        f"digraph {_quote(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, fontname="monospace"];',
    ]
    lines.extend(f"  {_quote(vid)};" for vid in graph)
    for edge in graph.edges():
        attrs = ' [style=dashed, label="notify"]' if edge.notify else ""
        lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"
