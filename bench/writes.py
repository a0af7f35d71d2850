"""The file write and check paths alone: N ``file`` resources through ``check``/``apply``,
in process, without start-up, policy or engine.

    .venv/bin/python bench/writes.py [N] [--repeats 7]

Writes (W1's core): N new files checked and applied concurrently on one event loop (as
the engine's workers do), into a directory emptied before each repeat. The ways of
committing the temp files are timed, interleaved, in the same run; each keeps the
guarantee (data durable before the rename, the directory synced before the report):

- ``one by one``: ``COMMIT_BATCH = 1``, each file fsynced, renamed, its directory
  fsynced, on its own;
- ``fsync each``: a batch (the files written in one pass of the event loop,
  ``convergent.host.commits.Commits``) with one fsync per file, then the renames, then
  one fsync per directory;
- ``fdatasync pool``: the batch's fdatasyncs run together in a pool of 16 threads;
- ``syncfs``: one ``syncfs()`` per file system for the whole batch (the default);
- ``no sync``: the batch without any sync, the floor (not a way convergent runs).

Checks (W2's core): N converged files checked, two ways, interleaved:

- ``by path``: what ``check`` did before the host layer, ``lstat`` then
  ``open(path, O_NOFOLLOW)`` and a read, the kernel resolving every parent;
- ``by descriptor``: ``File.check`` today: the parent found again with one
  ``openat2(RESOLVE_NO_SYMLINKS)`` (CHASE_SAFE walk on a miss), ``fstatat``, then
  ``openat(O_NOFOLLOW|O_NONBLOCK)``, ``fstat`` and a read.

Prints the median and range of each and their ratios (the issue's bound for checks:
by descriptor / by path <= 1.10 of the whole W2 run, so this in-process ratio, which
leaves out start-up, is the stricter figure). Works under a temporary directory in /tmp.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from convergent.host import atomic
from convergent.host import commits as group_commit
from convergent.resources.base import Context
from convergent.resources.file import File
from convergent.resources.fswatch import FsWatcher

_WATCHER = FsWatcher()  # nothing watched: expect() finds no directory and returns False


def _context(resource: File, commits: atomic.Commits, sweeper: atomic.Sweeper) -> Context:
    services = {atomic.Commits: commits, atomic.Sweeper: sweeper, FsWatcher: _WATCHER}
    return Context(
        resource.id,
        ready=lambda: None,
        event=lambda: None,
        log=lambda message: None,
        shared=lambda factory: services[factory],
    )


def _files(target: Path, size: int) -> list[File]:
    return [
        File(str(target / f"f{i:04d}"), content=f"i am f{i:04d}\n", mode="0644")
        for i in range(size)
    ]


async def _write_all(target: Path, size: int) -> float:
    commits, sweeper = atomic.Commits(), atomic.Sweeper()
    files = _files(target, size)

    async def converge(resource: File) -> None:
        ctx = _context(resource, commits, sweeper)
        change = await resource.check(ctx)
        assert change is not None
        await resource.apply(ctx, change)

    start = time.perf_counter()
    await asyncio.gather(*(converge(f) for f in files))
    return time.perf_counter() - start


async def _check_all(files: list[File]) -> float:
    commits, sweeper = atomic.Commits(), atomic.Sweeper()
    start = time.perf_counter()
    for resource in files:
        assert await resource.check(_context(resource, commits, sweeper)) is None
    return time.perf_counter() - start


def _check_by_path(paths: list[tuple[str, bytes]]) -> float:
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    start = time.perf_counter()
    for path, wanted in paths:
        st = os.lstat(path)
        fd = os.open(path, flags)
        try:
            data = os.read(fd, st.st_size + 1)
        finally:
            os.close(fd)
        assert data == wanted and st.st_mode & 0o777 == 0o644
    return time.perf_counter() - start


def _show(times: dict[str, list[float]], size: int) -> dict[str, float]:
    medians = {way: statistics.median(found) for way, found in times.items()}
    for way, found in times.items():
        print(
            f"{way:>13}: {medians[way] * 1e3:7.2f} ms median "
            f"({min(found) * 1e3:.2f}-{max(found) * 1e3:.2f}) for {size:,} files"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("size", nargs="?", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    default, sync = group_commit.COMMIT_BATCH, group_commit.SYNC
    ways = {
        "one by one": (1, "fsync"),
        "fsync each": (default, "fsync"),
        "fdatasync pool": (default, "fdatasync-pool"),
        "syncfs": (default, "syncfs"),
        "no sync": (default, "none"),
    }
    writes: dict[str, list[float]] = {way: [] for way in ways}
    checks: dict[str, list[float]] = {"by path": [], "by descriptor": []}
    root = Path(tempfile.mkdtemp(prefix="convergent-writes-", dir="/tmp"))
    try:
        target = root / "target"
        for _ in range(args.repeats):
            for way, (batch, how) in ways.items():
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir()
                os.sync()  # each way starts with nothing of the others' left to write
                group_commit.COMMIT_BATCH, group_commit.SYNC = batch, how
                writes[way].append(asyncio.run(_write_all(target, args.size)))
        group_commit.COMMIT_BATCH, group_commit.SYNC = default, sync
        files = _files(target, args.size)
        paths = [(f"{target}/f{i:04d}", f"i am f{i:04d}\n".encode()) for i in range(args.size)]
        runs: dict[str, Callable[[], float]] = {
            "by path": lambda: _check_by_path(paths),
            "by descriptor": lambda: asyncio.run(_check_all(files)),
        }
        for _ in range(args.repeats):
            for way, run in runs.items():
                checks[way].append(run())
    finally:
        group_commit.COMMIT_BATCH, group_commit.SYNC = default, sync
        shutil.rmtree(root, ignore_errors=True)
    medians = _show(writes, args.size)
    for way in ways:
        print(f"{way} / one by one: {medians[way] / medians['one by one']:.2f}")
    medians = _show(checks, args.size)
    ratio = medians["by descriptor"] / medians["by path"]
    print(f"checks by descriptor / by path: {ratio:.2f} (in process, start-up left out)")


if __name__ == "__main__":
    main()
