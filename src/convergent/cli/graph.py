"""``convergent graph FILE``: the dependency graph of a policy as Graphviz DOT or SVG: the
written edges, the automatic edges and groups the engine adds (as a run would make
them), and the bundle uses as boxes."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from convergent.cli.load import load_graph
from convergent.render import say

__all__ = ["graph_command"]

NO_DOT = "graphviz 'dot' not found: install it (apt-get install graphviz) or use --format dot"


def graph_command(args: argparse.Namespace) -> int:
    """Write the graph; 2 for an invalid policy or a missing graphviz, 1 for an output error."""
    from convergent.cli.inputs import read_inputs

    inputs, error = read_inputs(args)
    if error is not None:
        say(error)
        return 2
    graph = load_graph(args.file, inputs)
    if graph is None:
        return 2
    from convergent.graph.autoedge import plan_autoedges
    from convergent.graph.dot import to_dot
    from convergent.resources.group import Group, prepare

    name = os.path.splitext(os.path.basename(args.file))[0] or "convergent"
    groups = [
        [member.id for member in vertex.members]
        for vertex in prepare(graph).vertices.values()
        if isinstance(vertex, Group)
    ]
    text = to_dot(graph, name, auto_edges=plan_autoedges(graph).added, groups=groups)
    if args.format == "svg":
        dot = shutil.which("dot")
        if dot is None:
            print(NO_DOT, file=sys.stderr)
            return 2
        done = subprocess.run(
            [dot, "-Tsvg"], input=text, capture_output=True, text=True, encoding="utf-8"
        )
        if done.returncode != 0:
            say(
                f"convergent: '{dot} -Tsvg' failed with exit code {done.returncode}:\n"
                + done.stderr.rstrip()
            )
            return 1
        text = done.stdout
    from convergent.cli.files import emit

    return emit(text, args.output, mode=None)  # 0666 less the umask, as a shell redirect
