"""``convergent graph FILE``: the dependency graph of a policy as Graphviz DOT or SVG."""

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
    graph = load_graph(args.file)
    if graph is None:
        return 2
    from convergent.graph.dot import to_dot

    name = os.path.splitext(os.path.basename(args.file))[0] or "convergent"
    text = to_dot(graph, name)
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
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        write_atomic(args.output, text)
    except OSError as exc:
        say(f"convergent: cannot write {args.output}: {exc.strerror or exc}")
        return 1
    return 0


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename): never half written."""
    from convergent.host.atomic import write_file

    write_file(path, text.encode("utf-8"))
