"""Where the memory of a run goes, per resource: N converged files checked by the real
``run`` command in this process, a look at the heap the moment it converges.

    .venv/bin/python bench/memory.py [N] [--top 25] [--no-trace] [--idle]

Prints, at the first ``Converged`` (``--idle``: 1 s later, the agent at rest): the
heap traced by ``tracemalloc`` (grouped by the line that allocated it) and the live
objects by type (``gc.get_objects``, shallow ``sys.getsizeof``), each with its bytes per
resource; the resident set when the policy is loaded and when the run converges, with
the traced heap then and its peak so far (the load's own peak comes first: its entries
are freed once the graph is built); and the process's peak RSS (``ru_maxrss``; with
tracing on it includes tracemalloc's own tables, so ``--no-trace`` gives the figure a
user sees). Works under a temporary directory in /tmp.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import policies
import workloads as wl

__all__ = ["main"]


def _types(size: int, top: int) -> None:
    count: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        count[name] += 1
        nbytes[name] += sys.getsizeof(obj)
    total = sum(nbytes.values())
    print(f"\nlive objects tracked by gc: {total / 2**20:.1f} MiB, {total / size:.0f} B/resource")
    for name, b in nbytes.most_common(top):
        print(f"  {b / size:8.0f} B/res  {count[name] / size:6.2f}/res  {name}")


def _trace(snapshot: tracemalloc.Snapshot, size: int, top: int) -> None:
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"\ntraced heap: {total / 2**20:.1f} MiB, {total / size:.0f} B/resource")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = frame.filename.split("/src/")[-1].split("/lib/python3.11/")[-1]
        per = f"{stat.size / size:8.0f} B/res  {stat.count / size:6.2f}/res"
        print(f"  {per}  {where}:{frame.lineno}")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _moment(name: str, size: int) -> None:
    """The resident set now, and the traced heap now and at its peak so far."""
    line = f"{name}: RSS {_rss_mib():.0f} MiB"
    if tracemalloc.is_tracing():
        now, peak = tracemalloc.get_traced_memory()
        line += f"; traced {now / size:.0f} B/resource, peak so far {peak / size:.0f}"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("size", nargs="?", type=int, default=10000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--no-trace", action="store_true")
    p.add_argument("--idle", action="store_true", help="look 1 s after convergence (agent at rest)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="convergent-memory-", dir="/tmp"))
    try:
        target = root / "target"
        target.mkdir()
        workload = wl.create("W7-check", args.size)
        wl.prepare(workload, target)
        policy = root / "policy.yaml"
        policy.write_text(policies.convergent(workload, target))
        del workload  # the bench's own list of N files is no part of the run's memory
        from convergent.cli import run as run_module
        from convergent.cli.main import main as cli
        from convergent.engine import runner
        from convergent.engine.report import Converged

        load_graph = run_module.load_graph

        def loaded(*given: Any) -> Any:
            graph = load_graph(*given)
            _moment("policy loaded", args.size)
            return graph

        run_module.load_graph = loaded

        seen: list[Any] = []
        report = runner.Engine.report

        def spy(self: runner.Engine, record: Any) -> None:
            if isinstance(record, Converged) and not seen:
                seen.append(True)
                if args.idle:
                    import asyncio

                    asyncio.get_running_loop().call_later(1, look)
                else:
                    look()
            report(self, record)

        def look() -> None:
            _moment("converged" if not args.idle else "at rest", args.size)
            if not args.no_trace:
                _trace(tracemalloc.take_snapshot(), args.size, args.top)
                _types(args.size, args.top)

        runner.Engine.report = spy  # type: ignore[method-assign]
        if not args.no_trace:
            tracemalloc.start()
        state = str(root / "state")
        wait = "2" if args.idle else "0"
        code = cli(["run", str(policy), "--converged-timeout", wait, "--state-dir", state])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        each = peak * 1024 / args.size
        print(f"\nexit {code}; peak RSS {peak:.0f} MiB = {each:.2f} KiB/resource")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
