"""Benchmark convergent against its peers on the same work, in the same run.

    .venv/bin/python bench/run.py            # every installed peer (make bench)
    .venv/bin/python bench/run.py --quick    # convergent and CFEngine only

For every workload (``workloads.py``) each tool gets its own policy generated from the
same description (``policies.py``); the target directory is brought to the workload's
start state, the tool runs once per repeat (wall time and peak RSS from ``wait4``,
``measure.py``), and afterwards the directory must hold exactly the expected files
with the right content and mode, or the row says the result was wrong. Each tool runs
W3 once untimed first (page cache, first-run setup of its own state).

The slow peers (Ansible, pyinfra) run once per workload and at a reduced size (100
files instead of 1,000); convergent runs at that size too, so their ratio compares
the same work. The table says so in its notes. W5 (drift) runs convergent only.
W8 (packages: ``packages.py``, root and apt; the machine is put back as it was) adds
its own section. W9 (exchange) belongs to a later issue: add it to ``WORKLOADS``.
All work happens under a temporary directory in /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import report
import workloads as wl
from drift import DriftResult, measure_drift
from measure import RunFailed, Sample, run_once, summarize
from report import Result
from tools import TOOLS, Tool, by_name, fresh_startup_cache

__all__ = ["main"]

QUICK_TOOLS = ("convergent", "CFEngine")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")


class Bench:
    """Runs cases one after the other under ``root`` and collects the results."""

    def __init__(self, root: Path, timeout: float, echo: Callable[[str], None]) -> None:
        self.root = root
        self.target = root / "target"
        self.timeout = timeout
        self.echo = echo
        self.results: list[Result] = []
        self.broken: dict[str, str] = {}

    def _reset(self) -> None:
        if self.target.exists():
            shutil.rmtree(self.target)
        self.target.mkdir()

    def _workdir(self, tool: Tool, workload: wl.Workload) -> Path:
        slug = f"{tool.name}-{workload.key}-{workload.size}".replace(" ", "_")
        return self.root / "work" / slug

    def warm_up(self, tool: Tool) -> bool:
        """One untimed W3 run; a tool that fails it is reported and skipped."""
        reason = tool.missing()
        if reason is None:
            workload = wl.create("W3", 10)
            inv = tool.setup(workload, self.target, self._workdir(tool, workload) / "warm")
            self._reset()
            try:
                run_once(inv, self.root / "warm.log", self.timeout)
                problems = wl.verify(workload, self.target)
                reason = f"wrong result: {'; '.join(problems)}" if problems else None
            except RunFailed as exc:
                reason = f"failed: {exc}"
        if reason is not None:
            self.broken[tool.name] = reason.splitlines()[0]
            self.echo(f"  {tool.name}: {reason}")
            return False
        return True

    def case(self, tool: Tool, workload: wl.Workload, repeats: int, notes: list[str]) -> Result:
        """Time ``repeats`` runs of ``tool`` on ``workload``; verify each result."""
        result = Result(workload, tool, notes=list(notes))
        self.results.append(result)
        if tool.name in self.broken:
            result.problem = f"not run: {self.broken[tool.name]}"
            return result
        workdir = self._workdir(tool, workload)
        inv = tool.setup(workload, self.target, workdir)
        samples: list[Sample] = []
        rewrites = 0
        for _ in range(repeats):
            self._reset()
            wl.prepare(workload, self.target)
            before = wl.snapshot(self.target) if workload.prepare is not wl.Prepare.EMPTY else {}
            os.sync()  # the harness's own writes and removals are not the tool's
            try:
                samples.append(run_once(inv, workdir / "log", self.timeout))
            except RunFailed as exc:
                result.problem = f"failed: {str(exc).splitlines()[0]}"
                self.echo(f"  {tool.name} {workload.label}: {exc}")
                break
            problems = wl.verify(workload, self.target)
            if problems:
                result.problem = f"wrong result: {'; '.join(problems)}"
                break
            rewrites = max(rewrites, wl.rewritten(before, self.target))
        if rewrites:
            result.notes.append(f"rewrote {rewrites:,} files that were already right")
        if samples and not result.problem:
            result.summary = summarize(samples)
        self._reset()
        s = result.summary
        shown = f"{s.median:.3f} s median, {s.rss_mib:.0f} MiB" if s else result.problem
        self.echo(f"  {workload.label:32} {tool.name:12} {shown}")
        return result

    def drift(self, tool: Tool, size: int, trials: int, gap: float = 0.0) -> DriftResult | None:
        """W5 for one continuous tool; the result is verified like any other."""
        workload = wl.drift(size)
        self._reset()
        inv = tool.setup(workload, self.target, self._workdir(tool, workload))
        log = self._workdir(tool, workload) / "agent.log"
        try:
            found = measure_drift(inv, workload, self.target, log, trials, gap=gap)
        except (RuntimeError, TimeoutError) as exc:
            self.echo(f"  W5 {tool.name}: {exc!r}")
            return None
        problems = wl.verify(workload, self.target)
        self._reset()
        if problems:
            self.echo(f"  W5 {tool.name}: wrong result after the trials: {problems}")
            return None
        self.echo(
            f"  W5 {tool.name}: p50 {found.p50 * 1e3:.2f} ms, p99 {found.p99 * 1e3:.2f} ms, "
            f"{found.failures} failures, agent CPU {found.cpu_per_trial * 1e3:.2f} ms per trial"
        )
        return found


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="convergent and CFEngine only")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per fast case")
    p.add_argument("--size", type=int, default=1000, help="files in W1/W2/W4")
    p.add_argument("--small", type=int, default=10, help="files in W3")
    p.add_argument("--slow-size", type=int, default=100, help="files for the slow peers")
    p.add_argument("--scale", default="10000,100000", help="W7 sizes, comma separated")
    p.add_argument(
        "--peer-scale", type=int, default=10000, help="largest W7 size for Puppet and Salt"
    )
    p.add_argument("--drift-size", type=int, default=10000, help="files watched in W5")
    p.add_argument("--trials", type=int, default=200, help="W5 trials")
    p.add_argument(
        "--drift-gap",
        type=float,
        default=0.0,
        help="ms between a W5 repair seen and the next damage (default 0: back to back)",
    )
    p.add_argument("--tools", default="", help="comma separated subset of tools")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. W1,W3")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results.md", help="report file"
    )
    return p.parse_args(argv)


def _notes(tool: Tool) -> list[str]:
    return ["reference: a bare Python script, no framework"] if tool.reference else []


def _tools(args: argparse.Namespace) -> list[Tool]:
    if args.tools:
        return [by_name(n) for n in args.tools.split(",")]
    if args.quick:
        return [by_name(n) for n in QUICK_TOOLS]
    return list(TOOLS)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, write the report, print it; non-zero if a result was wrong."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    tools = _tools(args)
    keys = set(args.workloads.split(","))
    began = time.time()
    root = Path(tempfile.mkdtemp(prefix="convergent-bench-", dir="/tmp"))
    bench = Bench(root, args.timeout, lambda line: print(line, flush=True))
    drift: DriftResult | None = None
    try:
        if any(t.name == "convergent" for t in tools):
            fresh_startup_cache()  # the warm-up writes it with the bench's modules only
        print(f"warming up {', '.join(t.name for t in tools)} (one untimed W3 run each)")
        live = [t for t in tools if bench.warm_up(t)]
        fast = [t for t in tools if not t.slow]
        slow = [t for t in tools if t.slow]
        ours = [t for t in tools if t.name == "convergent"]
        reduced = ours if any(t in live for t in slow) else []
        for key in ("W1", "W2", "W3", "W4"):
            if key not in keys:
                continue
            size = args.small if key == "W3" else args.size
            for tool in fast:
                bench.case(tool, wl.create(key, size), args.repeats, _notes(tool))
            small = args.small if key == "W3" else args.slow_size
            if key != "W3":
                for tool in reduced:
                    bench.case(tool, wl.create(key, small), args.repeats, ["for the slow peers"])
            for tool in slow:
                bench.case(tool, wl.create(key, small), 1, ["slow peer: 1 run"])
        drift_note = "not run"
        if "W5" in keys:
            drift_note = (
                f"convergent runs as an agent on {args.drift_size:,} files; each of "
                f"{args.trials} trials deletes (even) or overwrites (odd) a different file "
                "and times until the harness reads the right content again, detected with "
                "inotify on the directory (no polling), "
                + (
                    f"{args.drift_gap:g} ms after the trial before. "
                    if args.drift_gap
                    else "right after the trial before. "
                )
                + "The peers have no event-driven mode: their figure is their schedule."
            )
            for tool in ours:
                drift = bench.drift(tool, args.drift_size, args.trials, args.drift_gap / 1e3)
        if "W6" in keys:
            for tool in (t for t in tools if not t.reference):
                bench.case(
                    tool,
                    wl.parallel(),
                    1 if tool.slow else max(1, min(args.repeats, 3)),
                    ["slow peer: 1 run"] if tool.slow else [],
                )
        if "W7" in keys:
            for size in (int(n) for n in args.scale.split(",")):
                for key in ("W7-create", "W7-check"):
                    for tool in fast:
                        if tool.name in ("Puppet", "Salt") and size > args.peer_scale:
                            continue
                        bench.case(tool, wl.create(key, size), 1, ["1 run", *_notes(tool)])
        w8: list[str] = []
        if "W8" in keys:
            from packages import measure_packages
            from packages import render as render_w8

            w8 = render_w8(measure_packages(max(1, min(args.repeats, 3)), bench.echo))
        header = [
            *report.machine(),
            f"- mode: {'QUICK (convergent and CFEngine only)' if args.quick else 'full'}; "
            f"{args.repeats} timed runs per case unless the row says otherwise; "
            f"took {(time.time() - began) / 60:.1f} min",
            "- wall time: perf_counter around spawn .. wait4; peak RSS: GNU /usr/bin/time "
            "%M (ru_maxrss), i.e. the largest single process of the tool's process tree",
            "- tools run without PYTHON* environment variables (this sandbox sets "
            "PYTHONDONTWRITEBYTECODE=1, which would make every Python tool recompile)",
            "- before its first timed run each tool runs W3 once untimed (page cache, its own "
            "first-run state)",
            "- every run is verified: exactly the expected files, content and mode (and "
            "for W6 the command markers, chain in order); a wrong result is a failed row",
            "- ratio = convergent median / peer median on the same workload and size",
            "- slow peers (Ansible, pyinfra): 1 run each, W1/W2/W4 at "
            f"{args.slow_size} files; W7 (10k, 100k): 1 run, Puppet and Salt only up to "
            f"{args.peer_scale:,} files, Ansible and pyinfra not at all",
        ]
        for name, why in bench.broken.items():
            header.append(f"- {name} not run: {why}")
        text = report.render(bench.results, drift, drift_note, tools, header, w8)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(text)
    print()
    print(text)
    bad = [r for r in bench.results if r.problem.startswith("wrong")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
