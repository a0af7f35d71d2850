"""Where convergent's time goes on W1 (create 1,000), W2 (check 1,000) and W3 (10 files).

    .venv/bin/python bench/hotspots.py [--runs 10] [--size 1000] [--out bench/profile.md]

Two views, both from the real CLI (``convergent run POLICY --converged-timeout 0``):

- ``python -X importtime``: the import cost, by top-level package.
- py-spy (from ``bench/.peers-venv``, ``make bench-peers``) sampling at 2 kHz with
  ``--idle`` (so time blocked in system calls, such as fsync, counts too) and
  ``--nonblocking``, over ``--runs`` runs of the workload, each from its start
  state; the milliseconds are each share of the median wall time of as many runs
  without the profiler. Every sample is put in
  one bucket: ``import`` (anything under the import machinery), else the innermost
  convergent module it is in: ``policy load`` (policy/, cli/load), ``graph``,
  ``resources`` (resources/: the check, apply and watch of each kind), ``engine``
  (engine/), ``cli`` (the rest of cli/); else ``asyncio loop`` or ``other``. The
  top functions by self time and by inclusive time follow.
"""

from __future__ import annotations

import argparse
import collections
import linecache
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import policies
import workloads as wl
from measure import run_once
from tools import PEERS_BIN, PROJECT_BIN, REPO, Invocation, clean_env

__all__ = ["main"]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
OURS = re.compile(r"(?:^|/)convergent/")
ASYNCIO = re.compile(r"(?:^|/)asyncio/")
BUCKETS = ("import", "policy load", "graph", "resources", "engine", "cli", "asyncio loop", "other")


def _inside(file: str) -> str | None:
    """The path under the convergent package (``engine/worker.py``), or None."""
    m = OURS.search(file)
    return file[m.end() :] if m else None


def _bucket(frames: list[tuple[str, str]]) -> str:
    if any("importlib._bootstrap" in file or func == "_find_and_load" for func, file in frames):
        return "import"
    for _, file in reversed(frames):
        part = _inside(file)
        if part is None:
            continue
        if part.startswith(("policy/", "cli/load.py")):
            return "policy load"
        for prefix, name in (
            ("graph/", "graph"),
            ("resources/", "resources"),
            ("engine/", "engine"),
            ("cli/", "cli"),
        ):
            if part.startswith(prefix):
                return name
    if any(ASYNCIO.search(file) for _, file in frames):
        return "asyncio loop"
    return "other"


def _parse_raw(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames: list[tuple[str, str]] = []
        for raw in stack.split(";"):
            m = FRAME.match(raw.strip())
            if m:
                where = f"{m['file']}:{m['line']}" if m["line"] else m["file"]
                frames.append((m["func"], where))
            elif raw.strip():
                frames.append((raw.strip(), ""))
        stacks.append((frames, int(count)))
    return stacks


def _source(where: str) -> str:
    """The source text of ``convergent/x.py:N`` frames, to tell fsync from open."""
    file, _, line = where.rpartition(":")
    part = _inside(file)
    if part is None or not line.isdigit():
        return ""
    text = linecache.getline(str(REPO / "src" / "convergent" / part), int(line)).strip()
    return f": `{text}`" if text else ""


def _short(func: str, file: str) -> str:
    if "/site-packages/" in file:
        file = file.split("/site-packages/", 1)[1]
    elif (part := _inside(file)) is not None:
        file = "convergent/" + part
    elif "/lib/python3" in file:
        file = file.split("/lib/", 1)[1]
    return f"{func} ({file})"


def summarize(stacks: list[tuple[list[tuple[str, str]], int]], wall: float) -> list[str]:
    """Buckets, top self and top inclusive functions, as markdown lines.

    Shares come from the samples; milliseconds are those shares of ``wall``, the
    median wall time of the same runs without the profiler (sampling slows a run).
    """
    total = sum(n for _, n in stacks) or 1
    buckets: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        buckets[_bucket(frames)] += n
        if frames:
            own[_short(*frames[-1]) + _source(frames[-1][1])] += n
        for name in {_short(f, w.rsplit(":", 1)[0]) for f, w in frames if _inside(w)}:
            inclusive[name] += n
    ms = wall * 1000 / total
    lines = [
        f"{total} samples; ms = share of the unprofiled median wall time, {wall * 1000:.0f} ms",
        "",
        "| bucket | share | ms per run |",
        "| --- | ---: | ---: |",
    ]
    for name in BUCKETS:
        if buckets[name]:
            share = buckets[name] / total
            lines.append(f"| {name} | {share:.0%} | {buckets[name] * ms:.1f} |")
    lines += ["", "Top lines by self time (the leaf frame of each sample):", ""]
    lines += [f"- {n / total:.1%} {name}" for name, n in own.most_common(12)]
    lines += ["", "Top convergent functions by inclusive time:", ""]
    lines += [f"- {n / total:.1%} {name}" for name, n in inclusive.most_common(15)]
    return lines


def importtime(argv: list[str]) -> list[str]:
    """Import cost of one run, by top-level package (cumulative of the top level)."""
    proc = subprocess.run(
        [str(PROJECT_BIN / "python"), "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    per: collections.Counter[str] = collections.Counter()
    total = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        first, _, name = line.split("|")
        us = int(first.split(":")[1])
        total += us
        per[name.strip().split(".")[0]] += us
    lines = [f"total import self time: {total / 1000:.1f} ms", ""]
    lines += [f"- {name}: {us / 1000:.1f} ms" for name, us in per.most_common(12)]
    return lines


def _reset(workload: wl.Workload, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    wl.prepare(workload, target)


def profile(key: str, size: int, runs: int, rate: int, root: Path) -> list[str]:
    """Profile ``runs`` runs of workload ``key`` at ``size`` files."""
    workload = wl.create(key, size)
    target = root / "target"
    policy = root / f"{key}.yaml"
    policy.write_text(policies.convergent(workload, target))
    argv = [str(PROJECT_BIN / "convergent"), "run", str(policy), "--converged-timeout", "0"]
    raw = ""
    walls: list[float] = []
    inv = Invocation(argv, clean_env(), root)
    for i in range(runs):
        _reset(workload, target)
        walls.append(run_once(inv, root / "log", 600).wall)
        _reset(workload, target)
        out = root / f"{key}-{i}.txt"
        subprocess.run(
            [
                str(PEERS_BIN / "py-spy"),
                "record",
                "--idle",
                "--nonblocking",
                "-r",
                str(rate),
                "-f",
                "raw",
                "-o",
                str(out),
                "--",
                str(PROJECT_BIN / "python"),
                *argv,
            ],
            capture_output=True,
            check=True,
            env=inv.env,
        )
        problems = wl.verify(workload, target)
        if problems:
            raise RuntimeError(f"{key}: wrong result under the profiler: {problems}")
        raw += out.read_text()
    _reset(workload, target)
    lines = [f"## {workload.label}", "", f"### py-spy, {runs} runs", ""]
    lines += summarize(_parse_raw(raw), statistics.median(walls))
    lines += ["", "### -X importtime (one run)", "", *importtime(argv)]
    shutil.rmtree(target, ignore_errors=True)
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--rate", type=int, default=2000, help="samples per second")
    p.add_argument("--workloads", default="W1,W2,W3", help="W3 runs at 10 files")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "profile.md")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(tempfile.mkdtemp(prefix="convergent-profile-", dir="/tmp"))
    try:
        lines = ["# Where convergent's time goes", ""]
        for key in args.workloads.split(","):
            size = 10 if key == "W3" else args.size
            lines += profile(key, size, args.runs, args.rate, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
