"""Automatic edges of 10,000 nested files: a deep chain and a wide tree.

    .venv/bin/python bench/autoedge.py [N]

For each shape it prints the time of ``autoedges(graph)`` (the graph copied, every file's
nearest managed ancestor found, the cycle check) and, as the peer measured in the same
run, the time of ``graph.topological_order()`` on the result: one linear pass over the
same vertices and edges. A ratio that stays flat as N grows means autoedges is linear.
Each shape is built in both orders (parents first, children first). Nothing is written
to disk: resources are only constructed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from convergent.graph import Graph
from convergent.graph.autoedge import autoedges
from convergent.resources.base import Resource
from convergent.resources.file import File


def chain(n: int) -> list[str]:
    """/t/d/d/d/...: every file is the directory of the next (short names keep the
    deepest path near 2n bytes)."""
    out, path = [], "/t"
    for _ in range(n):
        path += "/d"
        out.append(path)
    return out


def wide(n: int) -> list[str]:
    """/t/dI/fJ: n/100 directories of 99 files each."""
    out = []
    for i in range(n // 100):
        out.append(f"/t/d{i}")
        out.extend(f"/t/d{i}/f{j}" for j in range(99))
    return out


def graph_of(paths: list[str]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for path in paths:
        g.add(File(path, state="directory"))
    return g


def best(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(f"autoedges of {n} files (best of 3)")
    print(f"{'shape':<22} {'autoedges s':>12} {'topo sort s':>12} {'ratio':>7} {'edges':>7}")
    for shape, make in (("chain", chain), ("wide", wide)):
        paths = make(n)
        for order, listed in (("parents first", paths), ("children first", paths[::-1])):
            g = graph_of(listed)
            seconds, result = best(lambda g=g: autoedges(g))
            peer, _ = best(result.topological_order)
            count = sum(1 for _ in result.edges())
            assert count == len(paths) - (1 if shape == "chain" else n // 100), count
            label = f"{shape}, {order}"
            print(f"{label:<22} {seconds:>12.3f} {peer:>12.3f} {seconds / peer:>7.1f} {count:>7}")


if __name__ == "__main__":
    main()
