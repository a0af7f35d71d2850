"""A busy stranger beside watched files: the agent's CPU while another process writes a
file nobody manages, in a directory it watches, without pause.

    .venv/bin/python bench/noise.py [--runs 3] [--seconds 3] [--base CHECKOUT]

The agent (``convergent run``, watching: no ``--converged-timeout``) keeps 10 files of
one directory. Once it has converged, ``sh -c 'while :; do echo x; done > DIR/log'``
writes a line per ``write`` in that directory (``beside``), or in a directory the agent
does not watch (``elsewhere``, the control). The agent's user + system CPU over
``--seconds`` (``/proc/PID/stat``) is printed as a share of one core: median (min-max)
over the runs. ``--base DIR`` runs another checkout's ``src`` the same way,
interleaved.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]

REPO = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")
_FILES = 10


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _policy(target: Path) -> str:
    lines = ["resources:"]
    for i in range(_FILES):
        lines += [f'  - file: "{target}/f{i}"', f'    content: "line {i}\\n"']
    return "\n".join(lines) + "\n"


def _until_converged(fd: int, bound: float) -> None:
    """Read the agent's output until its line "converged; watching ..." (at most
    ``bound`` seconds)."""
    seen, deadline = b"", time.monotonic() + bound
    while b"\nconverged" not in b"\n" + seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SystemExit(f"noise: the agent did not converge within {bound:g} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise SystemExit("noise: the agent ended before it converged: " + seen.decode())
        seen += chunk


def measure(src: Path, work: Path, where: str, seconds: float) -> float:
    """The agent's CPU (share of a core) while the stranger writes ``where``."""
    shutil.rmtree(work, ignore_errors=True)
    target, other = work / "target", work / "other"
    target.mkdir(parents=True)
    other.mkdir()
    policy = work / "policy.yaml"
    policy.write_text(_policy(target))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(src / "src")
    argv = [sys.executable, "-m", "convergent", "run", str(policy)]
    agent = subprocess.Popen(
        [*argv, "--state-dir", str(work / "state")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert agent.stdout is not None
        _until_converged(agent.stdout.fileno(), 60)
        log = (target if where == "beside" else other) / "log"
        writer = subprocess.Popen(["/bin/sh", "-c", f"while :; do echo x; done > '{log}'"])
        try:
            time.sleep(0.5)  # the writer under way: the window starts here
            before, start = _cpu(agent.pid), time.monotonic()
            time.sleep(seconds)
            used, spent = _cpu(agent.pid) - before, time.monotonic() - start
        finally:
            writer.kill()
            writer.wait()
        return used / spent
    finally:
        agent.terminate()
        agent.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--base", type=Path, help="another checkout, run the same way (interleaved)")
    args = p.parse_args()
    trees = {"convergent": REPO} | ({"base": args.base.resolve()} if args.base else {})
    found: dict[tuple[str, str], list[float]] = {}
    root = Path(tempfile.mkdtemp(prefix="convergent-noise-", dir="/tmp"))
    try:
        for n in range(args.runs):
            order = list(trees.items()) if n % 2 == 0 else list(reversed(trees.items()))
            for name, src in order:
                for where in ("beside", "elsewhere"):
                    share = measure(src, root / name, where, args.seconds)
                    found.setdefault((name, where), []).append(share)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"agent CPU, % of one core, {args.runs} runs of {args.seconds:g} s: median (min-max)")
    for (name, where), shares in found.items():
        values = sorted(100 * share for share in shares)
        med = statistics.median(values)
        print(f"  {name:10s} stranger {where:9s} {med:6.1f} ({values[0]:.1f}-{values[-1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
