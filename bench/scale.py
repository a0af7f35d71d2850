"""W7 check at several sizes, several runs per size: time, peak RSS, the growth exponent.

    .venv/bin/python bench/scale.py [--sizes 10000,50000,100000] [--runs 3] [--tools ...]

For each size the target directory is brought to the converged state once; then each
tool checks it ``--runs`` times, the tools interleaved within each run (convergent,
then the peer, then the other order next time). Every run is verified (nothing may be
rewritten). Prints per size and tool: median, min and max wall time, µs per file, peak
RSS (GNU time), the ratio convergent/peer per run (min / median / max); and per tool the
exponent k of time ~ N^k fitted by least squares over every run, and from the smallest
to the largest size, for the wall time and for the CPU time (user+sys, which a shared
machine's load moves far less).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import workloads as wl
from measure import RunFailed, Sample, run_once
from tools import by_name

__all__ = ["exponent", "main"]


def exponent(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of log(time) over log(N)."""
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", default="10000,50000,100000")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tools", default="convergent,CFEngine")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(argv)
    tools = [by_name(n) for n in args.tools.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    found: dict[tuple[int, str], list[Sample]] = {}
    root = Path(tempfile.mkdtemp(prefix="convergent-scale-", dir="/tmp"))
    try:
        for size in sizes:
            workload = wl.create("W7-check", size)
            target = root / "target"
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
            wl.prepare(workload, target)
            before = wl.snapshot(target)
            invs = {t.name: t.setup(workload, target, root / f"{t.name}-{size}") for t in tools}
            for run in range(args.runs + 1):
                order = tools if run % 2 == 0 else list(reversed(tools))
                for tool in order:
                    log = root / f"{tool.name}-{size}" / "log"
                    sample = run_once(invs[tool.name], log, args.timeout)
                    problems = wl.verify(workload, target)
                    if problems or wl.rewritten(before, target):
                        raise RunFailed(f"{tool.name} at {size}: {problems[:3]} or rewrote files")
                    if run:  # run 0 warms the page cache and the tool's state
                        found.setdefault((size, tool.name), []).append(sample)
                print(f"{size:,}: run {run}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours = tools[0].name
    print("| N | tool | wall s min / median / max | µs/file | peak RSS MiB | ratio min/med/max |")
    print("| ---: | --- | --- | ---: | ---: | --- |")
    for size in sizes:
        mine = [s.wall for s in found[(size, ours)]]
        for tool in tools:
            samples = found[(size, tool.name)]
            walls = [s.wall for s in samples]
            med = statistics.median(walls)
            ratios = [a / b for a, b in zip(mine, walls, strict=True)]
            ratio = (
                "-"
                if tool.name == ours
                else (f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}")
            )
            rss = max(s.rss_mib for s in samples)
            print(
                f"| {size:,} | {tool.name} | {min(walls):.2f} / {med:.2f} / {max(walls):.2f} "
                f"| {med / size * 1e6:.0f} | {rss:.0f} | {ratio} |"
            )
    for tool in tools:
        points = [(n, s.wall) for n in sizes for s in found[(n, tool.name)]]
        lo = statistics.median(s.wall for s in found[(sizes[0], tool.name)])
        hi = statistics.median(s.wall for s in found[(sizes[-1], tool.name)])
        ends = math.log(hi / lo) / math.log(sizes[-1] / sizes[0])
        print(
            f"{tool.name}: time ~ N^{exponent(points):.3f} (least squares over every run), "
            f"N^{ends:.3f} from {sizes[0]:,} to {sizes[-1]:,} (medians)"
        )
        cpu = [(n, s.cpu) for n in sizes for s in found[(n, tool.name)]]
        per_file = ", ".join(
            f"{statistics.median(s.cpu for s in found[(n, tool.name)]) / n * 1e6:.0f}"
            for n in sizes
        )
        print(
            f"{tool.name}: CPU time ~ N^{exponent(cpu):.3f} (least squares over every run); "
            f"µs of CPU per file (medians): {per_file}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
