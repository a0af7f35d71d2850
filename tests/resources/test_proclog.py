"""The keepers of ``process`` logs as the agent holds them (``resources/proclog.py``),
through the Python API in this process: real keepers, real pipes, real processes."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent import Graph, Meta, Process, run
from convergent.resources.procfiles import Store
from convergent.resources.proclog import Keepers
from tests.waits import keepers_of, until_exited, until_written

BOUND = 30.0


def _pidfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            continue
    return count


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """1,100 descriptors open, so that the next ones are numbered past 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of descriptors is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    held = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_held_keeper_is_reused_with_descriptors_past_1024(
    tmp_path: Path, many_descriptors: None
) -> None:
    """A restart asks whether the held keeper still runs: with its pidfd past 1,024
    (an agent with many files and watches) the question is answered, not refused
    (``select()`` raises ValueError there)."""
    (tmp_path / "processes").mkdir(mode=0o700)
    store = Store(str(tmp_path))

    async def twice() -> tuple[int, int]:
        keepers = Keepers()
        try:
            first, keeper = keepers.output_for("process[a]", store, lambda: None)
            os.close(first)
            assert keeper.pidfd >= 1024
            second, again = keepers.output_for("process[a]", store, lambda: None)
            os.close(second)
            return keeper.pid, again.pid
        finally:
            keepers.close()

    first, second = asyncio.run(twice())
    assert first == second  # the same keeper, found running
    until_exited(first, BOUND)


@pytest.mark.parametrize("poll", [0.0, 3600.0], ids=["watched", "polled"])
def test_a_keeper_let_go_of_at_the_end_of_a_run_is_reaped_after_it(
    tmp_path: Path, kill_at_end: list[int], poll: float
) -> None:
    """``run()`` returns with the process running (watched, or polled with
    ``meta.poll``: never subscribed, so never unsubscribed); when it ends, so does its
    keeper, which is reaped although the run's event loop is closed: no zombie, no
    descriptor left behind."""
    before = _pidfds()
    graph: Graph = Graph()  # type: ignore[type-arg]
    cmd = ["sh", "-c", "echo from the api; exec sleep 300"]
    graph.add(Process("api", cmd=cmd, meta=Meta(poll=poll)))
    state = tmp_path / "state"
    result = run(graph, converged_timeout=0, state_dir=str(state))
    record = Store(str(state)).read("process[api]")
    assert record is not None
    kill_at_end.append(-record.pid)  # its group
    assert result.converged
    log = Path(Store(str(state)).log_path("process[api]"))
    until_written(log, lambda: log.read_bytes() == b"from the api\n", BOUND, "its line")
    (keeper,) = keepers_of(log)
    (reaper,) = [t for t in threading.enumerate() if t.name == f"reap log keeper {keeper}"]
    os.killpg(record.pid, signal.SIGKILL)
    reaper.join(BOUND)
    assert not reaper.is_alive()
    assert not Path(f"/proc/{keeper}").exists()  # reaped, not a zombie
    assert _pidfds() == before
    os.waitpid(record.pid, 0)  # the process: this test's child (the API's start)
