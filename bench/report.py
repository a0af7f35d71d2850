"""bench/results.md: the machine, the method, the table of results and the targets."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field

from drift import DriftResult
from measure import Summary
from tools import Tool
from workloads import Workload

__all__ = ["Result", "Target", "machine", "render", "targets", "versions"]


@dataclass
class Result:
    """One (workload, tool) cell: a summary of its timed runs, or why there is none."""

    workload: Workload
    tool: Tool
    summary: Summary | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    """A target from the issue, what was measured, and whether it is met."""

    what: str
    goal: str
    measured: str
    met: bool | None
    row: tuple[str, int] | None = None


def machine() -> list[str]:
    """nproc, CPU model, memory, kernel, distribution, Python, date."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        with open("/etc/debian_version") as f:
            distro = f"Debian {f.read().strip()}"
    except OSError:
        distro = platform.platform()
    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu}, {mem} RAM",
        f"- kernel: {platform.release()}; {distro}; Python {platform.python_version()}",
    ]


def versions(tools: list[Tool]) -> dict[str, str]:
    """Each tool's own version line."""
    out: dict[str, str] = {}
    for tool in tools:
        path = tool.path()
        if path is None:
            continue
        try:
            proc = subprocess.run(
                [str(path), *tool.version_args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            text = (proc.stdout or proc.stderr).strip().splitlines()
            out[tool.name] = text[0] if text else "?"
        except (OSError, subprocess.TimeoutExpired) as exc:
            out[tool.name] = f"? ({exc})"
    return out


def _key(result: Result) -> tuple[str, int]:
    return (result.workload.key, result.workload.size)


def _ours(results: list[Result]) -> dict[tuple[str, int], Summary]:
    return {
        _key(r): r.summary for r in results if r.tool.name == "convergent" and r.summary is not None
    }


def _ratio(mine: Summary | None, theirs: Summary | None) -> str:
    if mine is None or theirs is None or theirs.median == 0:
        return "-"
    return f"{mine.median / theirs.median:.2f}"


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def table(results: list[Result], goals: list[Target]) -> list[str]:
    """The results table: one row per (workload, tool); convergent's rows say missed targets."""
    ours = _ours(results)
    missed = {t.row: t for t in goals if t.row is not None and t.met is False}
    lines = [
        "| workload | tool | median wall s | min-max s | peak RSS MiB | "
        "ratio convergent/peer | runs | notes |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        s = r.summary
        notes = [*r.notes, *([f"**{r.problem}**"] if r.problem else [])]
        goal = missed.get(_key(r)) if r.tool.name == "convergent" else None
        if goal is not None:
            notes.append(f"**target missed**: {goal.what} {goal.goal}")
        if s is None:
            cells = ["-", "-", "-", "-", "0"]
        else:
            ratio = "-" if r.tool.name == "convergent" else _ratio(ours.get(_key(r)), s)
            cells = [
                _fmt(s.median),
                f"{_fmt(s.low)}-{_fmt(s.high)}",
                f"{s.rss_mib:.0f}",
                ratio,
                str(s.runs),
            ]
        row = " | ".join([r.workload.label, r.tool.name, *cells, "; ".join(notes)])
        lines.append(f"| {row} |")
    return lines


def _find(results: list[Result], tool: str, key: str, size: int | None = None) -> Summary | None:
    for r in results:
        same = r.tool.name == tool and r.workload.key == key
        if same and (size is None or r.workload.size == size):
            return r.summary
    return None


def growth(results: list[Result]) -> list[str]:
    """W7: time per file at each N and the exponent k in time ~ N^k (10k -> 100k)."""
    lines: list[str] = []
    for key, title in (("W7-create", "create (W1)"), ("W7-check", "check (W2)")):
        base = "W1" if key == "W7-create" else "W2"
        by_tool: dict[str, list[tuple[int, float, float]]] = {}
        for r in results:
            if r.summary is None or r.workload.key not in (key, base):
                continue
            point = (r.workload.size, r.summary.median, r.summary.rss_mib)
            by_tool.setdefault(r.tool.name, []).append(point)
        for name, points in by_tool.items():
            points = sorted(set(points))
            if len(points) < 2:
                continue
            per = ", ".join(
                f"{n:,}: {t:.2f} s = {t / n * 1e6:.0f} µs/file, {m:.0f} MiB" for n, t, m in points
            )
            (n1, t1, _), (n2, t2, _) = points[-2], points[-1]
            k = math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")
            lines.append(
                f"- {title}, {name}: {per}; from {n1:,} to {n2:,} files time grows as N^{k:.2f}"
            )
    return lines


def targets(results: list[Result], drift: DriftResult | None) -> list[Target]:
    """The issue's targets, each with the figure measured in this run."""
    out: list[Target] = []
    for key, goal in (("W1", 0.6), ("W2", 0.6), ("W3", 2.0), ("W4", 0.6)):
        sizes = [
            r.workload.size
            for r in results
            if r.workload.key == key and r.tool.name == "CFEngine" and r.summary is not None
        ]
        mine = _find(results, "convergent", key, max(sizes)) if sizes else None
        theirs = _find(results, "CFEngine", key, max(sizes)) if sizes else None
        if mine is None or theirs is None:
            out.append(Target(f"{key} convergent/CFEngine", f"<= {goal}", "not measured", None))
            continue
        ratio = mine.median / theirs.median
        out.append(
            Target(
                f"{key} convergent/CFEngine",
                f"<= {goal}",
                f"{ratio:.2f} ({mine.median:.3f} s / {theirs.median:.3f} s)",
                ratio <= goal,
                (key, max(sizes)),
            )
        )
    if drift is None:
        out.append(Target("W5 drift p50 / p99", "<= 5 ms / <= 50 ms", "not measured", None))
    else:
        out.append(
            Target("W5 drift p50", "<= 5 ms", f"{drift.p50 * 1e3:.2f} ms", drift.p50 <= 0.005)
        )
        out.append(
            Target("W5 drift p99", "<= 50 ms", f"{drift.p99 * 1e3:.2f} ms", drift.p99 <= 0.050)
        )
    w6 = _find(results, "convergent", "W6")
    out.append(
        Target(
            "W6 parallel wall",
            "<= 3.1 s",
            f"{w6.median:.3f} s" if w6 else "not measured",
            None if w6 is None else w6.median <= 3.1,
            ("W6", 0),
        )
    )
    for key in ("W7-create", "W7-check"):
        small = _find(results, "convergent", key, 10_000)
        big = _find(results, "convergent", key, 100_000)
        if small is None or big is None:
            out.append(Target(f"{key} linear in N", "N^k, k <= 1.1", "not measured", None))
        else:
            k = math.log(big.median / small.median) / math.log(10)
            out.append(
                Target(
                    f"{key} linear in N (10k -> 100k)",
                    "N^k, k <= 1.1",
                    f"k = {k:.2f} ({small.median:.2f} s -> {big.median:.2f} s)",
                    k <= 1.1,
                    (key, 100_000),
                )
            )
        out.append(
            Target(
                f"{key} peak RSS at 10,000",
                "< 200 MiB",
                f"{small.rss_mib:.0f} MiB" if small else "not measured",
                None if small is None else small.rss_mib < 200,
                (key, 10_000),
            )
        )
    return out


def render(
    results: list[Result],
    drift: DriftResult | None,
    drift_note: str,
    tools: list[Tool],
    header: list[str],
    sections: list[str] | None = None,
) -> str:
    """The whole of results.md; ``sections``: lines of further sections (W8), before the
    targets."""
    lines = ["# convergent vs peers: benchmark results", "", *header, ""]
    found = versions(tools)
    lines += ["Versions:", ""]
    lines += [f"- {name}: {text}" for name, text in found.items()]
    goals = targets(results, drift)
    lines += ["", "## Results", "", *table(results, goals), ""]
    lines += ["## W5 drift latency (continuous mode)", "", drift_note, ""]
    if drift is not None:
        lines += [
            f"- convergent: p50 {drift.p50 * 1e3:.2f} ms, p99 {drift.p99 * 1e3:.2f} ms, "
            f"max {max(drift.latencies) * 1e3:.2f} ms over {len(drift.latencies)} repairs "
            f"({drift.failures} not restored within the trial timeout); first converged "
            f"after {drift.startup:.2f} s; agent peak RSS {drift.rss_mib:.0f} MiB (VmHWM)",
        ]
    lines += [
        f"- {t.name}: {t.schedule}" for t in tools if t.name != "convergent" and not t.reference
    ]
    lines += ["", "## W7 growth with N", "", *(growth(results) or ["- not measured"]), ""]
    if sections:
        lines += [*sections, ""]
    lines += [
        "## Targets (issue 4)",
        "",
        "| target | goal | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for t in goals:
        met = "-" if t.met is None else ("yes" if t.met else "**MISSED**")
        lines.append(f"| {t.what} | {t.goal} | {t.measured} | {met} |")
    return "\n".join(lines) + "\n"
