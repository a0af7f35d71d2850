"""What the noop prediction costs: W2 (check 1,000 converged files) with and without
``--noop``, this tree against another (``--before SRC``, say an older checkout's
``src``).

    .venv/bin/python bench/noop_check.py --before /tmp/old/src [--runs 21] [--size 1000]

Each run is a fresh ``python -m convergent run POLICY --converged-timeout 0`` (with and
without ``--noop``) on 1,000 files that are already right, the runs of both trees
interleaved so that the machine's load weighs on both alike; prints the median wall
time of each and the ratio after / before. The target (issue 14): under noop within
10 % of before (ratio <= 1.10), and no cost outside noop; a missed target is printed as
missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _policy(root: Path, size: int) -> str:
    lines = ["resources:"]
    for i in range(size):
        lines += [f'  - file: "{root}/f{i:05d}"', f'    content: "i am f{i:05d}\\n"']
        lines.append('    mode: "0644"')
    return "\n".join(lines) + "\n"


def _run(src: str, policy: Path, state: Path, noop: bool) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    argv = [sys.executable, "-m", "convergent", "run", str(policy), "--converged-timeout", "0"]
    argv += ["--state-dir", str(state)] + (["--noop"] if noop else [])
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or any(line.startswith("file[") for line in done.stdout.splitlines()):
        raise SystemExit(f"a run failed or found something to change:\n{done.stdout}{done.stderr}")
    return seconds


_IN_PROCESS = """
import asyncio, statistics, sys, time
from convergent.api import arun
from convergent.policy.loader import load_policy
noop = sys.argv[2] == "noop"
times = []
for _ in range(int(sys.argv[3])):
    graph = load_policy(sys.argv[1])
    start = time.perf_counter()
    asyncio.run(arun(graph, converged_timeout=0, noop=noop, reporter=lambda r: None))
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def _in_process(src: str, policy: Path, noop: bool, repeats: int) -> float:
    """The median time of ``repeats`` engine runs in one process (imports and the policy
    load left out): the engine's own cost, steadier than a whole process."""
    env = {**os.environ, "PYTHONPATH": src}
    argv = [sys.executable, "-c", _IN_PROCESS, str(policy), "noop" if noop else "real"]
    done = subprocess.run(
        [*argv, str(repeats)], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="the src directory to compare with")
    p.add_argument("--runs", type=int, default=21)
    p.add_argument("--size", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="convergent-bench-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        policy = Path(tmp) / "w2.yaml"
        policy.write_text(_policy(root, args.size))
        state = Path(tmp) / "state"
        env = {**os.environ, "PYTHONPATH": SRC}
        subprocess.run(
            [sys.executable, "-m", "convergent", "run", str(policy), "--converged-timeout", "0",
             "--state-dir", str(state)],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        times: dict[tuple[str, bool], list[float]] = {}
        engine: dict[tuple[str, bool], list[float]] = {}
        trees = {"before": args.before, "after": SRC}
        for _ in range(args.runs):
            for noop in (True, False):
                for name, src in trees.items():
                    times.setdefault((name, noop), []).append(_run(src, policy, state, noop))
        for _ in range(5):
            for noop in (True, False):
                for name, src in trees.items():
                    engine.setdefault((name, noop), []).append(_in_process(src, policy, noop, 5))
    print(f"W2: check {args.size} converged files, median of {args.runs} fresh processes")
    print("| run | before | after | after / before | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for noop in (True, False):
        before = statistics.median(times[("before", noop)])
        after = statistics.median(times[("after", noop)])
        ratio = after / before
        met = "met" if ratio <= 1.10 else "**MISSED**"
        label = "--noop" if noop else "real"
        print(f"| {label} | {before * 1000:.1f} ms | {after * 1000:.1f} ms | {ratio:.3f}x | "
              f"<= 1.10x: {met} |")  # fmt: skip
    print("\nThe engine's run alone, in process (median of 5 processes x 5 runs, no state):")
    print("| run | before | after | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for noop in (True, False):
        before = statistics.median(engine[("before", noop)])
        after = statistics.median(engine[("after", noop)])
        label = "--noop" if noop else "real"
        print(
            f"| {label} | {before * 1000:.1f} ms | {after * 1000:.1f} ms | {after / before:.3f}x |"
        )


if __name__ == "__main__":
    main()
