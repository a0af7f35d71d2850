"""Timing one process run: wall time and peak RSS, from ``wait4``.

Wall time is ``time.perf_counter`` from just before the spawn to the return of
``os.wait4``. Peak RSS comes from GNU ``/usr/bin/time -f %M``: the ``ru_maxrss`` of
the tool's process, into which Linux folds the peak of every descendant it reaped,
so the figure is the largest single process of the tool's process tree (not the sum
of concurrent ones). Why not ``wait4`` on the tool directly: on ``exec`` Linux also
folds in the peak RSS of the process image being replaced, which for a child forked
from this harness is the harness's own RSS (24 MiB and more); GNU time is a small C
program, so that floor drops to about 2 MiB.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tools import Invocation

__all__ = ["TIME", "RunFailed", "Sample", "Summary", "run_once", "spawn", "summarize"]

TIME = "/usr/bin/time"


class RunFailed(RuntimeError):
    """The tool exited with a code that does not mean success, or timed out."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run."""

    wall: float
    rss_mib: float
    cpu: float = float("nan")  # user + system seconds of the tool and its children


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and range over repeats; ``rss_mib`` is the highest peak seen."""

    median: float
    low: float
    high: float
    rss_mib: float
    runs: int


def spawn(inv: Invocation, argv: list[str], out: BinaryIO) -> subprocess.Popen[bytes]:
    """Start ``argv`` as ``inv`` says (its directory and environment), in a session of its
    own, no input, stdout and stderr into ``out``."""
    return subprocess.Popen(
        argv,
        cwd=inv.cwd,
        env=inv.env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_once(inv: Invocation, log: Path, timeout: float) -> Sample:
    """Run ``inv`` to completion; its output goes to ``log``. Raises :class:`RunFailed`."""
    rss_file = log.with_suffix(".rss")
    argv = [TIME, "-f", "%M", "-o", str(rss_file), "--", *inv.argv]
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = spawn(inv, argv, out)
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if wall >= timeout:
        raise RunFailed(f"timed out after {timeout:.0f} s; output in {log}")
    if code not in inv.ok:
        tail = log.read_text(errors="replace")[-1500:]
        raise RunFailed(f"exit code {code} ({' '.join(inv.argv[:3])} ...):\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Sample(wall, int(rss_file.read_text().split()[-1]) / 1024, cpu)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def summarize(samples: list[Sample]) -> Summary:
    """Median, min and max wall time, and the highest peak RSS of ``samples``."""
    walls = [s.wall for s in samples]
    return Summary(
        statistics.median(walls),
        min(walls),
        max(walls),
        max(s.rss_mib for s in samples),
        len(samples),
    )
