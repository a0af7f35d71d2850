"""The file write path alone: N new files through ``File.check``/``File.apply``, in process.

    .venv/bin/python bench/writes.py [N] [--repeats 7]

W1 without start-up, policy or engine: N ``file`` resources are checked and applied
concurrently on one event loop (as the engine's workers do), into a directory emptied
before each repeat (as the harness does). Two ways of committing the temp files are
timed, interleaved, in the same run:

- ``one by one``: ``COMMIT_BATCH = 1``, each file fsynced and renamed on its own (how
  every write was committed before batching);
- ``batched``: the default, the fsyncs and renames of the files written in one pass of
  the event loop done together (``convergent.resources.file._Commits``).

Each file still gets its own fsync before its own rename either way. Prints the median
and range of each and their ratio. Works under a temporary directory in /tmp.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from convergent.resources import file as file_kind
from convergent.resources.base import Context
from convergent.resources.file import File


def _context(resource: File, commits: Any) -> Context:
    return Context(
        resource.id,
        ready=lambda: None,
        event=lambda: None,
        log=lambda message: None,
        shared=lambda factory: commits,
    )


async def _write_all(target: Path, size: int) -> float:
    commits = file_kind._Commits()
    files = [
        File(str(target / f"f{i:04d}"), content=f"i am f{i:04d}\n", mode="0644")
        for i in range(size)
    ]

    async def converge(resource: File) -> None:
        ctx = _context(resource, commits)
        change = await resource.check(ctx)
        assert change is not None
        await resource.apply(ctx, change)

    start = time.perf_counter()
    await asyncio.gather(*(converge(f) for f in files))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    default = file_kind.COMMIT_BATCH
    ways = {"one by one": 1, "batched": default}
    times: dict[str, list[float]] = {way: [] for way in ways}
    root = Path(tempfile.mkdtemp(prefix="convergent-writes-", dir="/tmp"))
    try:
        target = root / "target"
        for _ in range(args.repeats):
            for way, batch in ways.items():
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir()
                file_kind.COMMIT_BATCH = batch
                times[way].append(asyncio.run(_write_all(target, args.size)))
    finally:
        file_kind.COMMIT_BATCH = default
        shutil.rmtree(root, ignore_errors=True)
    medians = {way: statistics.median(found) for way, found in times.items()}
    for way, found in times.items():
        print(
            f"{way:>10}: {medians[way] * 1e3:7.1f} ms median "
            f"({min(found) * 1e3:.1f}-{max(found) * 1e3:.1f}) for {args.size:,} files"
        )
    print(f"batched / one by one: {medians['batched'] / medians['one by one']:.2f}")


if __name__ == "__main__":
    main()
