"""Dependency graphs: pure data, no asyncio, no I/O."""

from typing import Any

from convergent.graph.core import Edge, Graph, Identified
from convergent.graph.identity import format_id, parse_ref

__all__ = ["Edge", "Graph", "Identified", "format_id", "parse_ref", "to_dot"]


def __getattr__(name: str) -> Any:
    """``to_dot`` is imported when asked for (``convergent graph``), not at every start."""
    if name == "to_dot":
        from convergent.graph.dot import to_dot

        return to_dot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
