"""``convergent check FILE``: validate a policy; never touches the host."""

from __future__ import annotations

import argparse
import sys

from convergent.cli.load import load_graph
from convergent.render import say

__all__ = ["check_command"]


def check_command(args: argparse.Namespace) -> int:
    """Print ``FILE: ok (N resources, M edges)`` and return 0, or the problems and return 2."""
    from convergent.cli.inputs import read_inputs

    inputs, error = read_inputs(args)
    if error is not None:
        say(error)
        return 2
    graph = load_graph(args.file, inputs)
    if graph is None:
        return 2
    edges = sum(1 for _ in graph.edges())
    say(f"{args.file}: ok ({len(graph)} resources, {edges} edges)", sys.stdout)
    return 0
