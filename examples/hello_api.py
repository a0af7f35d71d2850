"""The Python API: the same kind of graph as hello.yaml, built in code.

Run it with ``python examples/hello_api.py [ROOT]`` (ROOT defaults to
/tmp/convergent-api). It converges once and exits with the run's exit code.
"""

from __future__ import annotations

import sys
from typing import Any

from convergent import Exec, File, Graph, Noop, Resource, run


def build(root: str) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    top = g.add(File(root, state="directory", mode="0755"))
    f1 = g.add(File(f"{root}/f1", content="i am f1\n"), require=[top])
    f2 = g.add(File(f"{root}/f2", content="i am f2\n", mode="0600"), require=[top])
    g.add(
        Exec("build", cmd=["sh", "-c", "cat f1 f2 > built"], cwd=root, creates=f"{root}/built"),
        require=[f1, f2],
        notify=["noop[done]"],
    )
    g.add(Noop("done"))
    return g


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "/tmp/convergent-api"
    result = run(build(root), converged_timeout=0)
    print(result.summary())
    sys.exit(result.exit_code)
