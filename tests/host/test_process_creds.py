"""``host.process.run``: stdin fed to the command, who it runs as (user, group, groups),
its umask, and the death signal surviving the switch.

Real processes; every wait is bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from convergent.host import process
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody
from tests.waits import open_fifo_writer

BOUND = 10.0


def run(argv: list[str], **kwargs: Any) -> process.Finished:
    return asyncio.run(asyncio.wait_for(process.run(argv, **kwargs), BOUND))


def test_stdin_is_fed_to_the_command() -> None:
    done = run(["sh", "-c", "cat; echo end"], stdin=b"one\ntwo\n")
    assert done.code == 0
    assert done.stdout.text() == "one\ntwo\nend\n"


def test_without_stdin_the_command_reads_nothing() -> None:
    done = run(["cat"])
    assert (done.code, done.stdout.text()) == (0, "")


def test_stdin_larger_than_a_pipe_is_fed_whole_without_blocking_the_loop() -> None:
    data = b"x" * (1 << 20) + b"\n"
    done = run(["wc", "-c"], stdin=data)
    assert done.stdout.text().strip() == str(len(data))


def test_a_command_that_does_not_read_its_stdin_still_finishes() -> None:
    done = run(["true"], stdin=b"y" * (1 << 20))
    assert done.code == 0


def test_umask_applies_to_what_the_command_creates(tmp_path: Path) -> None:
    target = tmp_path / "made"
    done = run(["sh", "-c", f"umask; touch {target}"], umask=0o027)
    assert done.stdout.text().strip() == "0027"
    assert target.stat().st_mode & 0o777 == 0o640


@needs_root
def test_a_command_runs_as_the_given_user_group_and_groups_only() -> None:
    done = run(["sh", "-c", "id -u; id -g; id -G"], user=NOBODY, group=NOBODY, groups=[NOBODY])
    assert done.stdout.text().split("\n")[:3] == [str(NOBODY), str(NOBODY), str(NOBODY)]


@needs_root
def test_the_agents_supplementary_groups_are_never_inherited() -> None:
    os.setgroups([0, 4])
    try:
        done = run(["id", "-G"], user=NOBODY, group=NOBODY)
    finally:
        os.setgroups([0])
    assert done.stdout.text().split() == [str(NOBODY)]


@needs_root
def test_switching_users_without_root_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = lab(tmp_path) / "ran"

    def attempt() -> str:
        try:
            run(["touch", str(marker)], user=0)
        except PermissionError as exc:
            return str(exc)
        return "ran"

    message = run_as_nobody(attempt)
    assert "needs root" in message and f"uid {NOBODY}" in message
    assert not marker.exists()


@needs_root
def test_a_command_run_as_another_user_still_dies_with_the_agent(tmp_path: Path) -> None:
    """The kernel clears the death signal when credentials change: it is set after."""
    agent = textwrap.dedent(
        f"""
        import asyncio, sys
        from convergent.host import process
        asyncio.run(process.run(
            ["sh", "-c", "echo $$; exec sleep 60"], user={NOBODY}, group={NOBODY},
            log=lambda line: print(line, flush=True)))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert proc.stdout is not None
        ready = select.select([proc.stdout], [], [], BOUND)[0]
        assert ready, "the command did not start"
        line = proc.stdout.readline()
        pid = int(line.split(": ", 1)[1])
        pidfd = os.pidfd_open(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(BOUND)
        try:
            assert select.select([pidfd], [], [], BOUND)[0], "the command outlived the agent"
        finally:
            os.close(pidfd)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(BOUND)


@pytest.mark.parametrize("value", [None, 0o077])
def test_the_umask_of_the_agent_is_left_alone(value: int | None) -> None:
    before = os.umask(0o022)
    os.umask(before)
    run(["true"], umask=value)
    after = os.umask(0o022)
    os.umask(after)
    assert after == before


def test_a_finish_command_outlives_a_killed_agent(tmp_path: Path) -> None:
    """No death signal: killed between two writes, a shadow tool would leave the account
    files inconsistent."""
    fifo, done = tmp_path / "fifo", tmp_path / "done"
    os.mkfifo(fifo)
    agent = textwrap.dedent(
        f"""
        import asyncio
        from convergent.host import process
        asyncio.run(process.run(
            ["sh", "-c", "echo $$; cat {fifo} >/dev/null; touch {done}"], finish=True,
            log=lambda line: print(line, flush=True)))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], BOUND)[0], "the command did not start"
        pid = int(proc.stdout.readline().split(": ", 1)[1])
        pidfd = os.pidfd_open(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(BOUND)
        try:
            writer = _open_writer(fifo)  # fails when nothing reads: the command was killed
            os.close(writer)
            assert select.select([pidfd], [], [], BOUND)[0], "the command did not finish"
        finally:
            os.close(pidfd)
        assert done.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(BOUND)


def _open_writer(fifo: Path) -> int:
    """Open ``fifo`` for writing once a reader has it open (bounded)."""
    return open_fifo_writer(fifo, BOUND)


def test_a_cancelled_finish_command_is_let_end_by_itself(tmp_path: Path) -> None:
    fifo, done = tmp_path / "fifo", tmp_path / "done"
    os.mkfifo(fifo)

    async def main() -> None:
        argv = ["sh", "-c", f"cat {fifo} >/dev/null; touch {done}"]
        task = asyncio.ensure_future(process.run(argv, finish=True))
        writer = await asyncio.to_thread(_open_writer, fifo)
        task.cancel()
        await asyncio.sleep(0)  # the cancellation lands: run waits for the command
        os.close(writer)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), BOUND))
    assert done.exists(), "the command was killed instead of let finish"
