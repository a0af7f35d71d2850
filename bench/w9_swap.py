"""W9b's swap alone, in process: an engine runs N collected-like files in one directory
(tmpfs), then takes S swaps that each add K files (as exports trickling in do); prints
the engine's CPU time per swap (until converged again), median of R rounds. Run it with
PYTHONPATH pointing at the tree to measure::

    .venv/bin/python bench/w9_swap.py [--files 490] [--add 10] [--swaps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

from convergent.engine import Converged, Engine
from convergent.graph.core import Graph
from convergent.resources.base import Resource, convert_params, get_kind

BOUND = 60.0  # seconds any one convergence may take


def _file(path: str, **params: Any) -> Resource[Any]:
    cls = get_kind("file")
    assert cls is not None
    return cls(path, convert_params(cls.params_type, {"path": path, **params}))


def _graph(resources: list[Resource[Any]]) -> Graph[Resource[Any]]:
    graph: Graph[Resource[Any]] = Graph()
    for resource in resources:
        graph.add(resource)
    return graph


async def _converged(engine: Engine, flipped: asyncio.Event) -> None:
    async with asyncio.timeout(BOUND):
        while not engine.converged:
            flipped.clear()
            await flipped.wait()


async def one_round(where: str, files: int, add: int, swaps: int) -> float:
    """CPU ms per swap (the swap and the new files' checks and writes)."""
    resources = [_file(where, state="directory")]
    resources += [_file(f"{where}/f{i}", content=f"{i}\n") for i in range(files)]
    flipped = asyncio.Event()

    def reporter(report: object) -> None:
        if isinstance(report, Converged):
            flipped.set()

    engine = Engine(_graph(resources), reporter=reporter)
    run = asyncio.create_task(engine.run())
    await _converged(engine, flipped)
    cpu = time.process_time()
    for step in range(swaps):
        resources += [_file(f"{where}/g{step}-{i}", content=f"{i}\n") for i in range(add)]
        await engine.swap(_graph(resources))
        await _converged(engine, flipped)
    spent = (time.process_time() - cpu) / swaps * 1000
    engine.stop()
    await run
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=490)
    parser.add_argument("--add", type=int, default=10)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    results = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="w9s-", dir=where) as tmp:
            results.append(asyncio.run(one_round(tmp, args.files, args.add, args.swaps)))
    print(
        f"{args.files} files + {args.swaps} swaps of {args.add}: CPU per swap "
        f"{statistics.median(results):.2f} ms (median of {args.rounds}; "
        f"{min(results):.2f}-{max(results):.2f})"
    )


if __name__ == "__main__":
    main()
