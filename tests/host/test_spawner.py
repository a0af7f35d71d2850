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
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from convergent.host import process, spawner
from tests.waits import until_exited

BOUND = 10.0
_GLIBC = (1 << 31) | (1 << 32)  # signals 32 and 33, which glibc's posix_spawn ignores


def run(argv: list[str], **kwargs: Any) -> process.Finished:
    """``process.run`` through a spawner that takes commands."""

    async def through() -> process.Finished:
        assert await spawner.started(), "the spawner did not start"
        return await process.run(argv, **kwargs)

    return asyncio.run(asyncio.wait_for(through(), BOUND))


def _spawner_pid() -> int:
    assert spawner._SPAWNER.pid
    return spawner._SPAWNER.pid


def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :][:1].decode()


def _wait_exit(pid: int) -> None:
    until_exited(pid, BOUND)


# An agent: runs its command through the spawner and, once the command printed its first
# line, prints the spawner's PID and the command's.
_AGENT = """
import asyncio, json, sys
from convergent.host import process, spawner

def told(line):
    pids = {"spawner": spawner._SPAWNER.pid, "command": list(spawner._SPAWNER.running)}
    print(json.dumps(pids), flush=True)

async def main():
    assert await spawner.started()
    await process.run(json.loads(sys.argv[1]), log=told)

asyncio.run(main())
"""


def _agent(argv: list[str]) -> tuple[subprocess.Popen[str], int, int]:
    """A Python child running ``argv`` (which prints a line first) through the spawner;
    it, the spawner's PID and the command's, once the command runs."""
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, json.dumps(argv)], stdout=subprocess.PIPE, text=True
    )
    assert agent.stdout is not None
    assert select.select([agent.stdout], [], [], BOUND)[0], "the command did not start"
    pids = json.loads(agent.stdout.readline())
    (command,) = pids["command"]
    return agent, pids["spawner"], command


def test_a_command_is_started_by_the_spawner_and_not_forked_from_the_agent() -> None:
    done = run(["sh", "-c", "echo $PPID; ps -o ppid= -p $PPID"])
    parent, grandparent = (int(word) for word in done.stdout.text().split())
    assert parent == _spawner_pid() != os.getpid()
    assert grandparent == os.getpid()


def test_a_command_started_by_the_spawner_gets_what_the_agents_own_fork_gives(
    tmp_path: Path,
) -> None:
    """Signals (ignored, blocked), descriptors, directory, umask, environment, session:
    the same through the spawner as through a fork of the agent (a switch to root, the
    user it already is, takes the fork path), but for glibc's two internal signals."""
    if os.geteuid() != 0:
        pytest.skip("the fork path is taken here by a user switch, which needs root")
    script = (
        "grep -E '^Sig(Blk|Ign)' /proc/self/status; ls /proc/self/fd; umask; pwd; "
        "echo $FROM; echo $$; ps -o sid=,pgid= -p $$"
    )

    async def both() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)  # as the agent does
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        assert await spawner.started()
        kwargs: dict[str, Any] = {"cwd": str(tmp_path), "env": {"FROM": "agent"}, "umask": 0o027}
        through = await process.run(["sh", "-c", script], **kwargs)
        forked = await process.run(["sh", "-c", script], user=0, **kwargs)
        return through.stdout.text().splitlines(), forked.stdout.text().splitlines()

    through, forked = asyncio.run(asyncio.wait_for(both(), BOUND))
    for lines in (through, forked):
        ignored = int(lines[1].split()[1], 16)
        lines[1] = f"SigIgn: {ignored & ~_GLIBC:016x}"
        assert lines[-1].split() == [lines[-2], lines[-2]]  # its own session and group
    assert through[:-2] == forked[:-2]
    assert through[:2] == ["SigBlk:\t0000000000000000", "SigIgn: 0000000000000000"]
    assert through[2:-2] == ["0", "1", "2", "3", "0027", str(tmp_path), "agent"]  # 3: ls's


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
    pid = _spawner_pid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        os.kill(pid, sig)
    assert run(["true"]).code == 0
    assert _spawner_pid() == pid and _alive(pid)


def test_the_spawner_holds_no_descriptor_of_the_agent() -> None:
    assert run(["true"]).code == 0
    pid = _spawner_pid()
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert [fds[n] for n in (0, 1, 2)] == ["/dev/null"] * 3
    kinds = {"/": "directory", "anon_inode:[eventpoll]": "epoll", "anon_inode:[pidfd]": "pidfd"}
    others = sorted(
        kinds.get(target[:1], kinds.get(target, target.split(":")[0]))
        for n, target in fds.items()
        if n > 2 and target != "anon_inode:[pidfd]"
    )
    # its working directory (the agent's), its epoll, its end of the socket
    assert others == ["directory", "epoll", "socket"], fds
    # and pidfds: the agent's, and those of its own commands not reaped yet (the agent's
    # release of the one just run may still be on its way)
    pids = [_pidfd_pid(pid, n) for n, target in fds.items() if target == "anon_inode:[pidfd]"]
    assert os.getpid() in pids, fds
    for other in pids:
        assert other in (os.getpid(), -1) or _parent(other) == pid, (other, fds)


def _pidfd_pid(owner: int, fd: int) -> int:
    """The process a pidfd of ``owner`` refers to (-1: ended and reaped)."""
    info = Path(f"/proc/{owner}/fdinfo/{fd}").read_text()
    return int(next(line for line in info.splitlines() if line.startswith("Pid:")).split()[1])


def _parent(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def test_the_command_and_its_group_die_the_moment_the_agent_is_killed(
    kill_at_end: list[int],
) -> None:
    agent, spawner_pid, command = _agent(["sh", "-c", "sleep 300 & echo up; wait"])
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
        assert await spawner.started()
        up = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(
            process.run(["sh", "-c", "echo up; exec sleep 300"], log=lambda _: up.set_result(1))
        )
        await up
        [command] = spawner._SPAWNER.running
        kill_at_end.append(command)
        os.kill(_spawner_pid(), signal.SIGKILL)
        try:
            await task
        except ChildProcessError as exc:
            error: BaseException | None = exc
        else:
            error = None
        again = await process.run(["true"])
        return error, command, again.code

    error, command, code = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    assert error is not None and "exit status is unknown" in str(error)
    _wait_exit(command)
    assert code == 0


def test_a_spawner_that_died_while_idle_is_replaced_at_the_next_command() -> None:
    assert run(["true"]).code == 0
    old = _spawner_pid()
    os.kill(old, signal.SIGKILL)
    _wait_exit(old)
    assert run(["true"]).code == 0
    assert _spawner_pid() != old


def test_the_spawner_ends_with_an_agent_that_exits() -> None:
    agent, spawner_pid, _command = _agent(["echo", "up"])
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


def _children_of(parent: int, cmdline: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if _ppid(int(entry)) == parent and (
                    Path(f"/proc/{entry}/cmdline").read_bytes() == cmdline
                ):
                    found.append(int(entry))
    return found


def test_a_command_whose_start_was_cancelled_is_killed_when_it_starts() -> None:
    async def scenario() -> None:
        assert await spawner.started()
        task = asyncio.ensure_future(process.run(["sleep", "301"]))
        await asyncio.sleep(0)  # the request is sent, its answer not read yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await process.run(["true"])).code == 0  # answered after the cancelled one

    asyncio.run(asyncio.wait_for(scenario(), BOUND))
    for pid in _children_of(_spawner_pid(), b"sleep\x00301\x00"):
        _wait_exit(pid)


def test_an_ended_command_stays_unreaped_until_its_run_is_over() -> None:
    """Its PID is its process group's id: while the run may still kill the group, no
    other process may get it."""

    async def scenario() -> str | None:
        assert await spawner.started()
        started = await spawner.spawn(["true"], None, None, None, (None, None, None))
        assert started is not None
        await started.exited
        state = _state(started.pid)
        spawner.release(started.pid)
        assert (await process.run(["true"])).code == 0  # the release was read before
        assert _state(started.pid) is None
        return state

    assert asyncio.run(asyncio.wait_for(scenario(), BOUND)) == "Z"


def test_a_command_run_from_another_thread_is_forked_as_before() -> None:
    result: list[str] = []

    def in_thread() -> None:
        done = asyncio.run(asyncio.wait_for(process.run(["sh", "-c", "echo $PPID"]), BOUND))
        result.append(done.stdout.text().strip())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(BOUND)
    assert result == [str(os.getpid())]


_FORKING_AGENT = _AGENT.replace(
    "    await process.run(",
    "    import os, time\n"
    "    if os.fork() == 0:  # a fork that keeps the agent's end of the socket open\n"
    "        os.read(os.open('/dev/stdin', os.O_RDONLY), 1)\n"
    "        os._exit(0)\n"
    "    await process.run(",
)


def test_commands_die_with_the_agent_even_while_a_fork_of_it_holds_the_socket(
    kill_at_end: list[int],
) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", _FORKING_AGENT, json.dumps(["sh", "-c", "echo up; exec sleep 302"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert agent.stdout is not None and agent.stdin is not None
    assert select.select([agent.stdout], [], [], BOUND)[0], "the command did not start"
    (command,) = json.loads(agent.stdout.readline())["command"]
    kill_at_end += [agent.pid, command]
    agent.kill()
    agent.wait(BOUND)
    _wait_exit(command)
    agent.stdin.close()  # the fork ends


def test_a_start_scheduled_on_a_loop_closed_before_it_ran_is_scheduled_again() -> None:
    """An API user's loop may close right after its first command: the next loop's
    commands still get a spawner."""
    fresh = spawner._Spawner()
    closed = asyncio.new_event_loop()
    fresh._later(closed)  # the loop closes before the start runs
    closed.close()

    async def next_loop() -> bool:
        fresh._later(asyncio.get_running_loop())
        await asyncio.sleep(0)  # the scheduled start runs
        return fresh.pid != 0

    try:
        assert asyncio.run(asyncio.wait_for(next_loop(), BOUND))
    finally:
        fresh.lost("ended with the test")


_STARTS = ["-e", "trace=clone,clone3,vfork,sendmsg"]  # the spawner's starts and answers


@contextlib.asynccontextmanager
async def _traced_spawner(trace: Path, *options: str) -> AsyncIterator[None]:
    """strace attached to the spawner (writing ``trace``) from its attach to the block's
    end, when it is detached (or gone with the spawner) and waited for."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (Debian: apt-get install strace; make test)")
    assert await spawner.started()
    tracer = await asyncio.create_subprocess_exec(
        strace, "-p", str(_spawner_pid()), "-o", str(trace), *options, stderr=subprocess.PIPE
    )
    try:
        assert tracer.stderr is not None
        said = await tracer.stderr.readline()
        if b"Operation not permitted" in said:
            pytest.skip(f"strace may not attach to the spawner here: {said.decode().strip()}")
        assert b"attached" in said, said
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            tracer.terminate()  # strace detaches
        await tracer.wait()


def _children_in(trace: Path) -> list[int]:
    """The PIDs of the processes the traced spawner started, in order."""
    text = trace.read_text()
    return [int(p) for p in re.findall(r"^(?:clone3?|vfork)\(.*\) = (\d+)$", text, re.M)]


def _pidfd_if_running(pid: int, cmdline: bytes) -> int:
    """A pidfd on ``pid`` while it runs ``cmdline``, else -1."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return -1
    try:
        same = Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
    except OSError:
        same = False
    if same and not select.select([pidfd], [], [], 0)[0]:
        return pidfd
    os.close(pidfd)
    return -1


def test_a_command_found_along_path_is_started_once(tmp_path: Path) -> None:
    """The directories of PATH without the program are skipped without a start (a
    ``vfork`` and a failed ``exec`` each), as ``execvpe`` skips them in a fork."""
    trace = tmp_path / "trace"
    path = f"{tmp_path / 'a'}:{tmp_path / 'b'}:{tmp_path / 'c'}:/usr/bin:/bin"

    async def scenario() -> int:
        async with _traced_spawner(trace, *_STARTS):
            return (await process.run(["true"], env={"PATH": path})).code

    assert asyncio.run(asyncio.wait_for(scenario(), BOUND)) == 0
    assert len(_children_in(trace)) == 1, trace.read_text()


def test_a_command_whose_start_the_spawner_died_before_answering_is_killed(
    tmp_path: Path,
) -> None:
    """strace SIGKILLs the spawner at the system call that would answer a start (its
    fault injection: the real tracer, no stand-in): the command runs and the agent was
    never told its PID. The run fails and the agent finds the command by the token in
    its environment (every command has one of its own) and kills it."""
    trace = tmp_path / "trace"

    async def scenario() -> BaseException | None:
        async with _traced_spawner(trace, *_STARTS, "-e", "inject=sendmsg:signal=KILL"):
            try:
                await process.run(["sleep", "303"])
            except ChildProcessError as exc:
                return exc
            return None

    error = asyncio.run(asyncio.wait_for(scenario(), BOUND))
    started, text = _children_in(trace), trace.read_text()
    assert started and text.rstrip().endswith("+++ killed by SIGKILL +++"), text
    command = started[-1]  # the spawner's last child: the command, not answered
    pidfd = _pidfd_if_running(command, b"sleep\x00303\x00")
    try:
        assert error is not None and "while starting the command" in str(error)
        until_exited(command, BOUND)
    finally:
        if pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
