"""W5, drift latency: how fast a running agent restores a file that was deleted or edited.

The agent (``convergent run`` without ``--converged-timeout``) is started on N files,
its output going to a log file; the harness waits for the log's first line containing
``converged``, then runs trials: each picks a different file, deletes it (even trials)
or overwrites its content (odd trials), and times until the file holds the right
content again. Trials run back to back unless a gap is asked for (``gap``;
``bench/run.py --drift-gap``).

Detection uses inotify on the target directory (independent of the agent's own
watcher); on every event for that file the harness reads it, so the time recorded is
when the harness saw the right content, an upper bound on the agent's own repair time.
The trials run in one thread with nothing else in the process: a blocking ``poll`` on
the inotify descriptor, no event loop, and the agent's output written straight to the
file (no pipe for the harness to drain meanwhile), so the bound is tight: the asyncio
harness before it counted its own wake-ups and task switches too, 35-90 us of a p50
back to back and ~175 us of a lone trial's (docs/performance.md, "Where a back-to-back
trial's time goes").
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import signal
import statistics
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from measure import spawn
from tools import Invocation
from workloads import Workload

__all__ = ["DriftResult", "measure_drift"]


@dataclass(frozen=True, slots=True)
class DriftResult:
    """Latencies in seconds, and what it cost to get there."""

    latencies: tuple[float, ...]
    failures: int
    startup: float
    rss_mib: float
    cpu_per_trial: float = float("nan")  # the agent's user+sys seconds per trial (load-free)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]


def measure_drift(
    inv: Invocation,
    workload: Workload,
    target: Path,
    log: Path,
    trials: int = 200,
    trial_timeout: float = 5.0,
    start_timeout: float = 600.0,
    gap: float = 0.0,
) -> DriftResult:
    """Run the agent, wait until it has converged, then time ``trials`` repairs, each
    ``gap`` seconds after the one before was seen (0: back to back)."""
    argv = list(inv.argv)
    if "--converged-timeout" in argv:
        at = argv.index("--converged-timeout")
        del argv[at : at + 2]
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = spawn(inv, argv, out)
    try:
        _until_converged(proc, log, start_timeout)
        startup = time.perf_counter() - start
        rng = random.Random(4)
        chosen = rng.sample(list(workload.files), trials)
        latencies: list[float] = []
        failures = 0
        cpu_before = _cpu_seconds(proc.pid)
        with _Inotify(target, _CREATE | _MOVED_TO | _CLOSE_WRITE) as inotify:
            for i, spec in enumerate(chosen):
                if gap:
                    time.sleep(gap)  # the spacing asked for, not a wait for anything
                path = target / spec.name
                expected = spec.content.encode()
                began = time.perf_counter()
                if i % 2 == 0:
                    path.unlink()
                else:
                    with path.open("r+b") as f:
                        f.truncate(0)
                        f.write(b"tampered\n")
                if inotify.until(path, expected, began + trial_timeout):
                    latencies.append(time.perf_counter() - began)
                else:
                    failures += 1
        cpu = (_cpu_seconds(proc.pid) - cpu_before) / trials
        rss = _peak_rss_mib(proc.pid)
    finally:
        _stop(proc)
    if not latencies:
        raise RuntimeError(f"W5: no file was restored within {trial_timeout} s; see {log}")
    return DriftResult(tuple(latencies), failures, startup, rss, cpu)


def _until_converged(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Block until the agent's log has a line containing ``converged`` (inotify on the
    log, the agent's exit seen through a pidfd), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pidfd = os.pidfd_open(proc.pid)
    try:
        with _Inotify(log, _MODIFY) as inotify, log.open("rb") as f:
            poller = select.poll()
            poller.register(inotify.fd, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            seen = b""
            while True:
                seen = (seen + f.read()).lower()
                if b"converged" in seen:
                    return
                seen = seen[seen.rfind(b"\n") + 1 :]  # only a line not ended yet is kept
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the agent did not converge within {timeout} s")
                for fd, _ in poller.poll(left * 1000):
                    if fd == inotify.fd:
                        inotify.names()  # read only to empty the queue: the log is read above
                    elif b"converged" not in (seen + f.read()).lower():  # the agent has exited
                        raise RuntimeError("the agent exited before it printed 'converged'")
                    else:
                        return
    finally:
        os.close(pidfd)


_MODIFY, _CLOSE_WRITE, _MOVED_TO, _CREATE = 0x2, 0x8, 0x80, 0x100


class _Inotify:
    """inotify on one directory (or file), read in a blocking ``poll``."""

    def __init__(self, where: Path, mask: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(where), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {where}")
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def names(self) -> list[str]:
        """The names of the entries with an event waiting (empty when none is)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        names, offset = [], 0
        while offset < len(data):
            _, _, _, size = struct.unpack_from("iIII", data, offset)
            names.append(data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode())
            offset += 16 + size
        return names

    def until(self, path: Path, expected: bytes, deadline: float) -> bool:
        """Block until an event for ``path`` finds it holding ``expected``; False once
        ``deadline`` (``time.perf_counter``) has passed."""
        name = path.name
        while True:
            if name in self.names() and _holds(path, expected):
                return True
            left = deadline - time.perf_counter()
            if left <= 0 or not self.poller.poll(left * 1000):
                return False

    def __enter__(self) -> _Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _holds(path: Path, expected: bytes) -> bool:
    """Whether ``path`` holds ``expected``: one small read, done inline on purpose."""
    try:
        with open(path, "rb") as f:
            return f.read() == expected
    except FileNotFoundError:
        return False


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
