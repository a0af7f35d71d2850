"""What recording events costs: W2 (check 1,000 converged files) with this tree against
another tree (main before the event history), as whole ``convergent run`` processes.

    .venv/bin/python bench/events_ab.py --base /path/to/other/src [--rounds 15] [--size 1000]

Each round runs, in an order rotated from round to round (the machine is shared and
noisy, so the variants are interleaved and the medians compared):

- ``base``: ``convergent run W2 --converged-timeout 0 --state-dir D`` from ``--base``;
- ``events``: the same from this tree (the events recorded into ``D/events.db``);
- ``no history``: this tree with ``--events-keep 0`` (events made, none stored).

Prints each variant's median wall time, min-max, and the ratios to ``base``; the
target (issue 11: recording events costs under 5% on W2) is printed met or **MISSED**.
Also ``-X importtime`` of a 10-file run of each tree: the modules only this tree
imports, and the total import time of each (median of the rounds).
Works under a temporary directory in /tmp.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policies
import workloads

HERE = Path(__file__).resolve().parents[1] / "src"
TARGET = 1.05


def _run(src: Path, policy: Path, state: Path, *extra: str) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "convergent", "run", str(policy), "--converged-timeout", "0",
         "--state-dir", str(state), *extra],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0 or (
        "repaired: 0" not in done.stdout and "changed: 0" not in done.stdout
    ):
        raise SystemExit(f"a W2 run did not find everything converged:\n{done.stdout}{done.stderr}")
    return took, cpu


_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def _imports(src: Path, policy: Path, state: Path) -> tuple[dict[str, int], int]:
    """Modules imported by a run (name -> self µs) and the total µs."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "convergent", "run", str(policy),
         "--converged-timeout", "0", "--state-dir", str(state)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = {}
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m:
            found[m.group(4)] = int(m.group(1))
    return found, sum(found.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, type=Path, help="the src/ of the tree to compare")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--size", type=int, default=1000)
    args = p.parse_args()
    base = args.base.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="convergent-events-ab-"))
    try:
        w2 = workloads.create("W2", args.size)
        target = tmp / "w2"
        target.mkdir()
        workloads.prepare(w2, target)
        policy = tmp / "w2.yaml"
        policy.write_text(policies.convergent(w2, target))
        small = workloads.create("W2", 10)
        target10 = tmp / "w10"
        target10.mkdir()
        workloads.prepare(small, target10)
        policy10 = tmp / "w10.yaml"
        policy10.write_text(policies.convergent(small, target10))
        variants = {
            "base": (base, ()),
            "events": (HERE, ()),
            "no history": (HERE, ("--events-keep", "0")),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        for name, (src, extra) in variants.items():  # warm up; the state dirs made
            _run(src, policy, tmp / f"state-{name}", *extra)
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                src, extra = variants[name]
                wall, cpu = _run(src, policy, tmp / f"state-{name}", *extra)
                times[name].append(wall)
                cpus[name].append(cpu)
        print(f"W2 check {args.size:,}: {args.rounds} interleaved rounds, medians")
        for title, figures in (("wall", times), ("cpu (user+sys)", cpus)):
            base_median = statistics.median(figures["base"])
            print(f" {title}:")
            for name, values in figures.items():
                median = statistics.median(values)
                print(
                    f"  {name:<11} {median:.3f} s (min {min(values):.3f}, max {max(values):.3f})"
                    f"  ratio to base {median / base_median:.3f}"
                )
            ratio = statistics.median(figures["events"]) / base_median
            verdict = "met" if ratio < TARGET else "**MISSED**"
            print(f" target ({title}): events / base < {TARGET:.2f}: {ratio:.3f} {verdict}")

        seen: dict[str, list[int]] = {"base": [], "events": []}
        only: set[str] = set()
        for r in range(max(5, args.rounds // 3)):
            for name in ("base", "events") if r % 2 == 0 else ("events", "base"):
                src = base if name == "base" else HERE
                found, total = _imports(src, policy10, tmp / f"state10-{name}")
                seen[name].append(total)
                if name == "events":
                    only |= set(found)
                else:
                    base_found = set(found)
        print("10-file run, -X importtime (sum of self times, median):")
        for name, totals in seen.items():
            print(f"  {name:<7} {statistics.median(totals) / 1000:.1f} ms")
        extra_modules = sorted(only - base_found)
        print(f"  modules only this tree imports: {', '.join(extra_modules) or 'none'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
