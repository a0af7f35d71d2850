"""``host.spawner``: commands started by a process of the agent's own (no fork of the
agent), started exactly as the agent's own ``Popen`` would start them, and killed with
their group the moment the agent dies, kill -9 included.

Real processes: agents are Python children of the test that run ``host.process.run``;
every wait is bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.host import process, spawner

BOUND = 10.0


def run(argv: list[str], **kwargs: Any) -> process.Finished:
    return asyncio.run(asyncio.wait_for(process.run(argv, **kwargs), BOUND))


def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _wait_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], BOUND)[0], f"process {pid} is still running"
    finally:
        os.close(fd)


@pytest.fixture
def kill_at_end() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


_AGENT = """
import asyncio, json, os, sys
from convergent.host import process, spawner

async def main():
    task = asyncio.ensure_future(process.run(json.loads(sys.argv[1])))
    await asyncio.sleep(0)  # the run starts its command before its first wait
    [pid] = spawner._SPAWNER.running
    print(json.dumps({"spawner": spawner._SPAWNER.pid, "command": pid}), flush=True)
    await task

asyncio.run(main())
"""


def _agent(argv: list[str]) -> tuple[subprocess.Popen[str], int, int]:
    """A Python child that runs ``argv`` through ``process.run``; it, the spawner's PID and
    the command's, once the command runs."""
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, json.dumps(argv)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert agent.stdout is not None
    ready = select.select([agent.stdout], [], [], BOUND)[0]
    assert ready, "the agent did not start its command"
    pids = json.loads(agent.stdout.readline())
    return agent, pids["spawner"], pids["command"]


def test_a_command_is_started_by_the_spawner_and_not_forked_from_the_agent() -> None:
    done = run(["sh", "-c", "echo $PPID; ps -o ppid= -p $PPID"])
    parent, grandparent = (int(word) for word in done.stdout.text().split())
    assert parent == spawner._SPAWNER.pid != os.getpid()
    assert grandparent == os.getpid()


def test_a_command_started_by_the_spawner_gets_what_the_agents_own_fork_gives(
    tmp_path: Path,
) -> None:
    """Signals (ignored, blocked), descriptors, directory, umask, environment, session:
    the same through the spawner as through a fork of the agent (a switch to root, the
    user it already is, takes the fork path)."""
    if os.geteuid() != 0:
        pytest.skip("the fork path is taken here by a user switch, which needs root")
    script = (
        "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd; umask; pwd; "
        "echo $FROM; echo $$; ps -o sid=,pgid= -p $$"
    )

    async def both() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)  # as the agent does
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        kwargs: dict[str, Any] = {"cwd": str(tmp_path), "env": {"FROM": "agent"}, "umask": 0o027}
        through = await process.run(["sh", "-c", script], **kwargs)
        assert spawner._SPAWNER.pid  # it went through the spawner
        forked = await process.run(["sh", "-c", script], user=0, **kwargs)
        return through.stdout.text().splitlines(), forked.stdout.text().splitlines()

    through, forked = asyncio.run(asyncio.wait_for(both(), BOUND))
    assert through[:-2] == forked[:-2]
    assert through[:2] == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]
    assert through[2:-2] == ["0", "1", "2", "3", "0027", str(tmp_path), "agent"]  # 3: ls's
    for lines in (through, forked):
        assert lines[-1].split() == [lines[-2], lines[-2]]  # its own session and group


def test_a_start_that_fails_raises_what_popen_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        run(["no-such-program-here"])
    assert missing.value.filename == "no-such-program-here"
    with pytest.raises(FileNotFoundError) as nowhere:
        run(["true"], cwd=str(tmp_path / "gone"))
    assert nowhere.value.filename == str(tmp_path / "gone")
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(PermissionError) as refused:
        run([str(plain)])
    assert refused.value.filename == str(plain)
    assert run(["true"]).code == 0  # and the spawner still serves


def test_a_ctrl_c_meant_for_the_agent_does_not_end_the_spawner() -> None:
    assert run(["true"]).code == 0
    pid = spawner._SPAWNER.pid
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    assert run(["true"]).code == 0
    assert spawner._SPAWNER.pid == pid and _alive(pid)


def test_the_spawner_holds_no_descriptor_of_the_agent() -> None:
    assert run(["true"]).code == 0
    pid = spawner._SPAWNER.pid
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert [fds[n] for n in (0, 1, 2)] == ["/dev/null"] * 3
    others = sorted(target.split(":")[0] for n, target in fds.items() if n > 2)
    assert others == ["anon_inode", "socket"]  # its epoll and its end of the socket


def test_the_command_and_its_group_die_the_moment_the_agent_is_killed(
    kill_at_end: list[int],
) -> None:
    agent, spawner_pid, command = _agent(["sh", "-c", "sleep 300 & wait"])
    kill_at_end += [agent.pid, spawner_pid, command]
    assert _ppid(command) == spawner_pid and _ppid(spawner_pid) == agent.pid
    members = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and _alive(int(pid)) and os.getpgid(int(pid)) == command
    ]
    assert len(members) == 2  # the shell and its sleep
    agent.kill()
    agent.wait(BOUND)
    for pid in [*members, spawner_pid]:
        _wait_exit(pid)


def test_a_spawner_killed_under_a_running_command_fails_it_and_a_new_one_takes_over(
    kill_at_end: list[int],
) -> None:
    async def scenario() -> tuple[BaseException | None, int, int]:
        task = asyncio.ensure_future(process.run(["sleep", "300"]))
        await asyncio.sleep(0)  # the run starts its command before its first wait
        [command] = spawner._SPAWNER.running
        kill_at_end.append(command)
        os.kill(spawner._SPAWNER.pid, signal.SIGKILL)
        try:
            await task
        except ChildProcessError as exc:
            error: BaseException | None = exc
        else:
            error = None
        again = await process.run(["true"])
        return error, command, again.code

    old = spawner._SPAWNER.pid
    error, command, code = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert error is not None and "exit status is unknown" in str(error)
    _wait_exit(command)
    assert code == 0 and spawner._SPAWNER.pid != old


def test_a_spawner_that_died_while_idle_is_replaced_at_the_next_command() -> None:
    assert run(["true"]).code == 0
    old = spawner._SPAWNER.pid
    os.kill(old, signal.SIGKILL)
    _wait_exit(old)
    assert run(["true"]).code == 0
    assert spawner._SPAWNER.pid != old


def test_the_spawner_ends_with_an_agent_that_exits() -> None:
    agent, spawner_pid, _command = _agent(["true"])
    agent.wait(BOUND)
    _wait_exit(spawner_pid)


def test_a_huge_command_line_is_forked_as_before(tmp_path: Path) -> None:
    big = [c * 100_000 for c in "xyz"]  # more than a request to the spawner may carry
    done = run(["sh", "-c", "echo $# ${#1} $PPID", "sh", *big])
    count, length, parent = done.stdout.text().split()
    assert (int(count), int(length)) == (3, 100_000) and int(parent) == os.getpid()


def test_many_commands_at_once_each_get_their_own_exit_status() -> None:
    async def many() -> list[int]:
        runs = [process.run(["sh", "-c", f"exit {n}"]) for n in range(40)]
        return [done.code for done in await asyncio.gather(*runs)]

    assert asyncio.run(asyncio.wait_for(many(), BOUND)) == list(range(40))


def test_a_command_killed_by_a_signal_reports_it_negative() -> None:
    assert run(["sh", "-c", "kill -TERM $$"]).code == -signal.SIGTERM
