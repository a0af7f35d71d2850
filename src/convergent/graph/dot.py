"""Graphviz DOT export of a graph."""

from __future__ import annotations

from typing import Any

from convergent.graph.core import Graph

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
