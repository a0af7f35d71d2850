"""W6's overhead: where convergent's time goes beyond the commands of the critical path.

    .venv/bin/python bench/w6_overhead.py [--runs 7] [--base CHECKOUT]

W6 is four 1 s commands, three of them chained. Each run is traced with
``strace -f --seccomp-bpf -e trace=execve,exit_group`` (only those two calls stop, so
the trace costs next to nothing) and its instants are read from the trace:

- ``startup``: the agent's exec to the first chained command's exec;
- ``gap 1-2``, ``gap 2-3``: a chained command's exit to the next one's exec (what the
  engine does between them: reap, report, start the dependent vertex, spawn);
- ``tail``: the last command's exit to the agent's exit;
- ``commands``: the three chained commands' own time (``sh -c 'sleep 1 && ...'``);
- ``overhead``: the whole run less those commands (the engine's share of the critical
  path), and ``beyond 3 s``: the whole run less 3 s (the issue's figure, which also
  counts the shell's start in each command);
- ``engine CPU``: user + system CPU of the agent process alone (``RUSAGE_SELF``; the
  commands are its children and not counted).

Medians with min-max over the runs; ``--base DIR`` runs another checkout's ``src`` by the
same interpreter, interleaved. Needs ``strace``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import policies
import workloads as wl

__all__ = ["main", "measure"]

REPO = Path(__file__).resolve().parent.parent
CHAIN = ("step-1", "step-2", "step-3")
# Runs the command line in this process and prints its own CPU (children excluded).
_WRAPPER = """
import os, resource, sys
def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write("ENGINE_CPU %.6f\\n" % (r.ru_utime + r.ru_stime)); sys.stderr.flush()
_exit = os._exit
os._exit = lambda code: (_cpu(), _exit(code))
sys.argv = ["convergent", *sys.argv[1:]]
from convergent.cli.main import entry
entry()
"""
_NAME = re.compile(r"> (step-\d|independent)")


def measure(src: Path, work: Path) -> dict[str, float]:
    """One traced W6 run of the checkout ``src``: its instants and the agent's CPU (s)."""
    target = work / "target"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    policy = work / "w6.yaml"
    policy.write_text(policies.convergent(wl.parallel(), target))
    trace = work / "trace"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(src / "src")
    argv = ["run", str(policy), "--converged-timeout", "0", "--state-dir", str(work / "state")]
    strace = ["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,exit_group"]
    done = subprocess.run(
        [*strace, "-o", str(trace), sys.executable, "-c", _WRAPPER, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=True,
    )
    cpu = float(re.findall(r"ENGINE_CPU (\S+)", done.stderr)[-1])
    lines = trace.read_text().splitlines()
    agent, start = lines[0].split()[0], float(lines[0].split()[1])
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    shells: dict[str, str] = {}
    end = 0.0
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        pid, when = parts[0], float(parts[1])
        found = _NAME.search(line)
        if 'execve("/bin/sh"' in line and "= -1" not in line and found:
            shells[pid] = found.group(1)
            began[found.group(1)] = when
        elif "exit_group(" in line and pid in shells:
            ended[shells[pid]] = when
        elif "exit_group(" in line and pid == agent:
            end = when
    commands = sum(ended[n] - began[n] for n in CHAIN)
    return {
        "startup": began["step-1"] - start,
        "gap 1-2": began["step-2"] - ended["step-1"],
        "gap 2-3": began["step-3"] - ended["step-2"],
        "tail": end - ended["step-3"],
        "commands": commands,
        "overhead": end - start - commands,
        "beyond 3 s": end - start - 3.0,
        "engine CPU": cpu,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--base", type=Path, help="another checkout, run the same way (interleaved)")
    args = p.parse_args()
    if shutil.which("strace") is None:
        print("w6_overhead: strace is needed (apt-get install strace)", file=sys.stderr)
        return 2
    trees = {"convergent": REPO} | ({"base": args.base.resolve()} if args.base else {})
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for src in trees.values():  # the first round writes each start-up cache afresh
        for path in (src / "src" / "convergent" / "__pycache__").glob("startup.*.bin"):
            path.unlink(missing_ok=True)
    root = Path(tempfile.mkdtemp(prefix="convergent-w6-", dir="/tmp"))
    try:
        for n in range(args.runs + 1):  # the first round compiles bytecode: not counted
            order = list(trees.items()) if n % 2 == 0 else list(reversed(trees.items()))
            for name, src in order:
                row = measure(src, root / name)
                if n:
                    found[name].append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, rows in found.items():
        print(f"{name} ({trees[name]}), {len(rows)} runs, ms: median (min-max)")
        for key in rows[0]:
            values = sorted(1000 * row[key] for row in rows)
            med = statistics.median(values)
            print(f"  {key:11s} {med:8.1f} ({values[0]:.1f}-{values[-1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
