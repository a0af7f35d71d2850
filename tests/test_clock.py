"""The virtual clock (tests/clock.py) jumps only when nothing real is under way.

Each test puts a virtual timeout around real work that takes real time (starting a
Python process takes milliseconds; the clock would jump in microseconds): the timeout
must not fire before the work ends, while a plain sleep still takes no real time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from tests.clock import run_virtual

BOUND = 600.0  # virtual seconds: far more than any of the real work below takes for real
CHILD = [sys.executable, "-c", "import sys; sys.stdout.write('done')"]


def test_timeout_around_a_thread_pool_job_does_not_fire_before_the_job_ends() -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(BOUND):
            out = await asyncio.to_thread(
                subprocess.run, CHILD, capture_output=True, text=True, timeout=60
            )
        return out.stdout, loop.time() - start

    out, took = run_virtual(main())
    assert out == "done"
    assert took < BOUND


def test_timeout_around_a_subprocess_does_not_fire_before_it_exits() -> None:
    async def main() -> tuple[bytes, int]:
        async with asyncio.timeout(BOUND):
            proc = await asyncio.create_subprocess_exec(*CHILD, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
        return out, proc.returncode or 0

    assert run_virtual(main()) == (b"done", 0)


def test_timeout_around_a_pidfd_wait_does_not_fire_before_the_child_exits() -> None:
    """The way ``convergent.host.process`` waits: a pidfd registered with the loop."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        child = subprocess.Popen(CHILD, stdout=subprocess.DEVNULL)  # noqa: ASYNC220 (as host/process.py does)
        pidfd = os.pidfd_open(child.pid)
        exited = loop.create_future()
        loop.add_reader(pidfd, exited.set_result, None)
        try:
            async with asyncio.timeout(BOUND):
                await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            child.wait(timeout=60)
        return child.returncode

    assert run_virtual(main()) == 0


def test_timeout_around_a_pipe_a_child_writes_does_not_fire_before_the_data_comes() -> None:
    """Only a thread pool job reads the pipe: the loop itself has no descriptor to poll."""

    async def main() -> bytes:
        r, w = os.pipe()
        child = subprocess.Popen(CHILD, stdout=w)  # noqa: ASYNC220 (fork and exec only)
        os.close(w)
        try:
            async with asyncio.timeout(BOUND):
                return await asyncio.to_thread(os.read, r, 4)
        finally:
            os.close(r)
            child.wait(timeout=60)

    assert run_virtual(main()) == b"done"


def test_sleeps_and_timeouts_still_jump_when_nothing_real_is_under_way() -> None:
    async def main() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        fired = False
        try:
            async with asyncio.timeout(60):
                await asyncio.Event().wait()
        except TimeoutError:
            fired = True
        return loop.time() - start, fired

    real = time.monotonic()
    took, fired = run_virtual(main())
    assert took == 3660
    assert fired
    assert time.monotonic() - real < 30  # virtual hours, not real ones
