"""Paired, interleaved rounds: the ratio of convergent to a peer (or to another checkout
of convergent) on a busy machine.

    .venv/bin/python bench/pairs.py --rounds 12 --workloads W1,W2,W3,W4
    .venv/bin/python bench/pairs.py --tools convergent,base --base /path/to/checkout

In each round every tool runs every workload once, one after the other, in an order
that alternates from round to round, so that a burst of load from other processes
falls on both sides of a pair. The ratio is taken per round (convergent / peer in the
same round), and the spread of those ratios (min / median / max) is what is printed:
a ratio of medians over separate blocks of runs is at the mercy of when the load came.
Every run is verified like in ``run.py``. ``base`` is convergent from another checkout
(``--base DIR``: ``DIR/.venv/bin/convergent``), for before/after comparisons.

Sizes: W1/W2/W4 ``--size`` files (1,000), W3 ``--small`` (10), W6 the 4 x 1 s commands,
W7 ``--scale`` (checks of converged files, one size per ``W7:N`` key).

``--dir DIR`` makes the target under ``DIR`` (default /tmp): a directory on a file system
of its own (a loop-mounted image, say) measures the workloads there, free of what other
processes leave behind on the root file system (docs/performance.md, "W1's floor").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import workloads as wl
from measure import RunFailed, Sample, run_once
from tools import Invocation, Tool, by_name, clean_env, fresh_startup_cache

__all__ = ["main", "paired"]


def _base_tool(checkout: Path) -> Tool:
    """convergent from ``checkout``: its own ``.venv/bin/convergent``."""
    ours = by_name("convergent")
    exe = checkout / ".venv" / "bin" / "convergent"

    def layout(tool: Tool, workload: wl.Workload, target: Path, workdir: Path) -> Invocation:
        policy = workdir / "policy.yaml"
        policy.write_text(tool.generate(workload, target))
        state = str(workdir / "state")
        argv = [str(exe), "run", str(policy), "--converged-timeout", "0", "--state-dir", state]
        return Invocation(argv, clean_env(), workdir)

    return dataclasses.replace(ours, name="base", layout=layout)


def _workload(key: str, size: int, small: int) -> wl.Workload:
    if key == "W6":
        return wl.parallel()
    if key.startswith("W7:"):
        return wl.create("W7-check", int(key[3:]))
    return wl.create(key, small if key == "W3" else size)


def paired(
    tools: list[Tool],
    keys: list[str],
    rounds: int,
    size: int,
    small: int,
    timeout: float,
    where: Path = Path("/tmp"),
) -> dict[str, dict[str, list[Sample]]]:
    """``{workload key: {tool name: [one sample per round]}}``, rounds interleaved; the
    target and each tool's work directory are made under ``where``."""
    found: dict[str, dict[str, list[Sample]]] = {k: {t.name: [] for t in tools} for k in keys}
    root = Path(tempfile.mkdtemp(prefix="convergent-pairs-", dir=where))
    target = root / "target"
    try:
        for n in range(rounds + 1):
            order = tools if n % 2 == 0 else list(reversed(tools))
            for key in keys:
                workload = _workload(key, size, small)
                for tool in order:
                    workdir = root / "work" / f"{tool.name}-{key}".replace(":", "-")
                    inv = tool.setup(workload, target, workdir)
                    if target.exists():
                        shutil.rmtree(target)
                    target.mkdir()
                    wl.prepare(workload, target)
                    os.sync()  # the harness's own writes and removals are not the tool's
                    sample = run_once(inv, workdir / "log", timeout)
                    problems = wl.verify(workload, target)
                    if problems:
                        raise RunFailed(f"{tool.name} {key}: wrong result: {problems[:3]}")
                    if n:  # round 0 warms the page cache and each tool's own state
                        found[key][tool.name].append(sample)
            print(f"round {n}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return found


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tools", default="convergent,CFEngine")
    p.add_argument("--base", type=Path, help="another convergent checkout (tool 'base')")
    p.add_argument("--workloads", default="W1,W2,W3,W4")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument(
        "--dir",
        type=Path,
        default=Path("/tmp"),
        help="where the target directory is made: one on another file system measures that one",
    )
    args = p.parse_args(argv)
    tools = [
        _base_tool(args.base) if name == "base" else by_name(name) for name in args.tools.split(",")
    ]
    keys = args.workloads.split(",")
    for tool in tools:  # each convergent's warm-up writes its start-up cache afresh
        if tool.name == "convergent":
            fresh_startup_cache()
        elif tool.name == "base":
            fresh_startup_cache(args.base / ".venv" / "bin")
    found = paired(tools, keys, args.rounds, args.size, args.small, args.timeout, args.dir)
    ours = tools[0].name
    print(f"| workload | tool | wall s min / median / max | peak RSS MiB | {ours}/tool per round |")
    print("| --- | --- | --- | ---: | --- |")
    for key, by_tool in found.items():
        mine = [s.wall for s in by_tool[ours]]
        for name, samples in by_tool.items():
            walls = [s.wall for s in samples]
            pairs = zip(mine, walls, strict=True)
            ratio = "-" if name == ours else _spread([a / b for a, b in pairs])
            rss = max(s.rss_mib for s in samples)
            print(f"| {key} | {name} | {_spread(walls)} | {rss:.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
