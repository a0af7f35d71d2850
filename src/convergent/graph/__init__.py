"""Dependency graphs: pure data, no asyncio, no I/O."""

from convergent.graph.core import Edge, Graph, Identified
from convergent.graph.dot import to_dot
from convergent.graph.identity import format_id, parse_ref

__all__ = ["Edge", "Graph", "Identified", "format_id", "parse_ref", "to_dot"]
