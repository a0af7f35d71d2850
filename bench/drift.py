"""W5, drift latency: how fast a running agent restores a file that was deleted or edited.

The agent (``convergent run`` without ``--converged-timeout``) is started on N files; the
harness waits for its first line containing ``converged`` on stdout, then runs trials:
each picks a different file, deletes it (even trials) or overwrites its content (odd
trials), and times until the file holds the right content again. Trials run back to
back unless a gap is asked for (``gap``; ``bench/run.py --drift-gap``). Detection uses
inotify on the target directory (asyncinotify, independent of the agent's own watcher); on
every event for that file the harness reads it, so the time recorded is when the
harness saw the right content, an upper bound on the agent's own repair time. The
harness's inotify is read through ctypes on the event loop (no package needed).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import statistics
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
    return asyncio.run(
        _measure(inv, workload, target, log, trials, trial_timeout, start_timeout, gap)
    )


async def _measure(
    inv: Invocation,
    workload: Workload,
    target: Path,
    log: Path,
    trials: int,
    trial_timeout: float,
    start_timeout: float,
    gap: float,
) -> DriftResult:
    argv = list(inv.argv)
    if "--converged-timeout" in argv:
        at = argv.index("--converged-timeout")
        del argv[at : at + 2]
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=inv.cwd,
        env=inv.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    out = log.open("wb")
    try:
        await asyncio.wait_for(_until_converged(proc.stdout, out), start_timeout)
        startup = time.perf_counter() - start
        drain = asyncio.create_task(_copy(proc.stdout, out))
        rng = random.Random(4)
        chosen = rng.sample(list(workload.files), trials)
        latencies: list[float] = []
        failures = 0
        cpu_before = _cpu_seconds(proc.pid)
        with _Inotify(target, _CREATE | _MOVED_TO | _CLOSE_WRITE) as inotify:
            for i, spec in enumerate(chosen):
                if gap:
                    await asyncio.sleep(gap)
                path = target / spec.name
                expected = spec.content.encode()
                began = time.perf_counter()
                if i % 2 == 0:
                    path.unlink()
                else:
                    with path.open("r+b") as f:
                        f.truncate(0)
                        f.write(b"tampered\n")
                try:
                    await asyncio.wait_for(_until_right(inotify, path, expected), trial_timeout)
                    latencies.append(time.perf_counter() - began)
                except TimeoutError:
                    failures += 1
        cpu = (_cpu_seconds(proc.pid) - cpu_before) / trials
        rss = _peak_rss_mib(proc.pid)
        drain.cancel()
    finally:
        await _stop(proc)
        out.close()
    if not latencies:
        raise RuntimeError(f"W5: no file was restored within {trial_timeout} s; see {log}")
    return DriftResult(tuple(latencies), failures, startup, rss, cpu)


async def _until_converged(stream: asyncio.StreamReader, out: BinaryIO) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("the agent exited before it printed 'converged'")
        out.write(line)
        if b"converged" in line.lower():
            return


async def _copy(stream: asyncio.StreamReader, out: BinaryIO) -> None:
    while line := await stream.readline():
        out.write(line)


_CLOSE_WRITE, _MOVED_TO, _CREATE = 0x8, 0x80, 0x100


class _Inotify:
    """inotify on one directory, read on the event loop: ``await get()`` is the name of
    the next entry with an event."""

    def __init__(self, directory: Path, mask: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {directory}")
        self.names: list[str] = []
        self.ready = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset < len(data):
            _, _, _, size = struct.unpack_from("iIII", data, offset)
            self.names.append(data[offset + 16 : offset + 16 + size].rstrip(b"\0").decode())
            offset += 16 + size
        self.ready.set()

    async def get(self) -> str:
        while not self.names:
            self.ready.clear()
            await self.ready.wait()
        return self.names.pop(0)

    def __enter__(self) -> _Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def _until_right(inotify: _Inotify, path: Path, expected: bytes) -> None:
    name = path.name
    while True:
        if await inotify.get() == name and _holds(path, expected):
            return


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


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
