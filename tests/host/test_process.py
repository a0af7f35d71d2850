"""``host.process``: bounded capture and log, the run ends at the command's own exit, the
records of running commands, and a reaper that kills only what is proven ours.

Real processes in tmp_path; every wait is bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convergent.host import process
from convergent.host.children import TOKEN, children_dir, reap_orphans
from tests.waits import until_exited

BOUND = 10.0


def run(argv: list[str], **kwargs: Any) -> process.Finished:
    return asyncio.run(asyncio.wait_for(process.run(argv, **kwargs), BOUND))


def _state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()[0].decode()


def _start_time(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw[raw.rfind(b")") + 2 :].split()[19])


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def _wait_exit(pid: int) -> None:
    until_exited(pid, BOUND)


# -- capture and log ----------------------------------------------------------------------


def test_capture_keeps_the_last_bytes_and_counts_the_rest() -> None:
    capture = process.Capture(8)
    capture.add(b"0123456789")
    capture.add(b"ab\n")
    assert bytes(capture.data) == b"56789ab\n"
    assert capture.total == 13 and capture.cut
    capture.add(b"x" * 100)
    assert bytes(capture.data) == b"x" * 8 and capture.total == 113


def test_the_error_tail_is_the_last_lines_within_a_bound() -> None:
    capture = process.Capture(100)
    capture.add(b"".join(b"line%d\n" % i for i in range(40)))
    assert capture.tail(3) == ["line37", "line38", "line39"]
    assert capture.tail(20)[0] == "line26"  # the cut line before it ("5") is not shown
    long = process.Capture(100_000)
    long.add(b"y" * 50_000 + b"\n")
    (only,) = long.tail(10, 100)
    assert only.startswith("[...]") and len(only) == 100


def test_the_log_gets_the_first_64_kib_and_a_count_of_the_rest() -> None:
    logs: list[str] = []
    finished = run(["sh", "-c", "yes 0123456789abcdef | head -c 1000000"], log=logs.append)
    assert finished.code == 0
    shown = [line for line in logs if line.startswith("stdout: 0123")]
    assert sum(len(line) - len("stdout: ") + 1 for line in shown) <= process.SHOWN
    assert logs[-2:] == [
        "stdout: ... (only the first 64 KiB are shown)",
        f"stdout: ... {process.size(1_000_000 - process.SHOWN)} more not shown",
    ]
    assert finished.stdout.total == 1_000_000
    assert len(finished.stdout.data) == process.CAPTURE


# -- the command's own exit ends the run ---------------------------------------------------


def test_a_process_left_holding_the_output_does_not_hold_the_run(
    tmp_path: Path, kill_at_end: list[int]
) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started"
    logs: list[str] = []
    try:
        finished = run(["sh", "-c", script], log=logs.append)  # within BOUND, not 300 s
    finally:
        if pidfile.exists():
            kill_at_end.append(int(pidfile.read_text()))
    assert finished.code == 0
    assert logs == ["stdout: started"]
    assert _alive(kill_at_end[0])  # left to itself: the command ended by itself


def test_a_timeout_kills_the_group_and_says_so(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], time_limit=0.2)
    assert not _alive(int(pidfile.read_text()))


# -- records of running commands ---------------------------------------------------------


def test_a_running_command_is_recorded_privately_until_it_ends(tmp_path: Path) -> None:
    children = children_dir(str(tmp_path))
    seen: list[tuple[int, int, dict[str, Any]]] = []

    def log(line: str) -> None:
        (name,) = os.listdir(children)
        record = Path(children, name)
        seen.append(
            (
                stat.S_IMODE(os.stat(children).st_mode),
                stat.S_IMODE(record.stat().st_mode),
                json.loads(record.read_text()),
            )
        )

    run(["sh", "-c", f'echo "${TOKEN}"'], log=log, children=children, owner="exec[x]")
    ((dir_mode, file_mode, record),) = seen
    assert (dir_mode, file_mode) == (0o700, 0o600)
    assert record["owner"] == "exec[x]" and record["agent"] == os.getpid()
    assert os.listdir(children) == []


# -- the reaper ---------------------------------------------------------------------------


def _boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _record(state_dir: Path, name: str, **fields: Any) -> Path:
    """A record as a killed agent (PID 1 with another start time: not alive) leaves it."""
    directory = Path(children_dir(str(state_dir)))
    directory.mkdir(mode=0o700, exist_ok=True)
    record = {"boot": _boot(), "agent": 1, "agent_start": -1, "owner": "exec[x]", **fields}
    path = directory / name
    path.write_text(json.dumps(record))
    return path


def _orphan_session(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """A session whose leader has exited and whose member runs on:
    (session id, the leader's start time, the member's PID)."""
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 300 > /dev/null & echo $!"],
        stdout=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    start = _start_time(leader.pid)
    out, _ = leader.communicate(timeout=BOUND)
    return leader.pid, start, int(out)


def test_reap_spares_a_session_whose_leader_pid_was_reused(
    tmp_path: Path, kill_at_end: list[int]
) -> None:
    """A record names a session by the PID of its leader: when that PID now belongs to a
    process started at another time, or a process of that session does not carry the
    command's token, it is not the recorded command's and lives on."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    kill_at_end.append(stranger.pid)
    reused = _record(
        tmp_path,
        "reused.json",
        session=stranger.pid,
        start=_start_time(stranger.pid) - 1,  # the recorded command started before it
        token="t1",
    )
    session, start, member = _orphan_session()
    kill_at_end.append(member)
    untagged = _record(tmp_path, "untagged.json", session=session, start=start, token="t2")
    assert reap_orphans(str(tmp_path)) == []
    assert _alive(stranger.pid) and _alive(member)
    assert not reused.exists() and not untagged.exists()
    stranger.kill()
    stranger.wait(timeout=BOUND)


def test_reap_kills_an_orphaned_session_of_a_dead_agent(
    tmp_path: Path, kill_at_end: list[int]
) -> None:
    session, start, member = _orphan_session({**os.environ, TOKEN: "ours"})
    kill_at_end.append(member)
    record = _record(tmp_path, "ours.json", session=session, start=start, token="ours")
    assert reap_orphans(str(tmp_path)) == [member]
    _wait_exit(member)
    assert not record.exists()


def test_reap_leaves_the_commands_of_a_live_agent(tmp_path: Path, kill_at_end: list[int]) -> None:
    leader = subprocess.Popen(["sleep", "300"], start_new_session=True)
    kill_at_end.append(leader.pid)
    record = _record(
        tmp_path,
        "live.json",
        agent=os.getpid(),
        agent_start=_start_time(os.getpid()),
        session=leader.pid,
        start=_start_time(leader.pid),
        token="t",
    )
    assert reap_orphans(str(tmp_path)) == []
    assert _alive(leader.pid) and record.exists()
    leader.kill()
    leader.wait(timeout=BOUND)


def test_reap_removes_records_of_another_boot_and_unreadable_ones(tmp_path: Path) -> None:
    old = _record(tmp_path, "old.json", boot="another", session=1, start=0, token="t")
    torn = Path(children_dir(str(tmp_path)), "torn.json")
    torn.write_text('{"boot": ')
    assert reap_orphans(str(tmp_path)) == []
    assert not old.exists() and not torn.exists()
    assert _alive(1)


def test_a_writer_left_behind_cannot_keep_the_run_going(tmp_path: Path) -> None:
    """``yes`` in the background writes to the command's stdout for ever: the run still
    ends after the drain, and the writer ends on the closed pipe (SIGPIPE)."""
    pidfile = tmp_path / "pid"
    logs: list[str] = []
    finished = run(["sh", "-c", f"yes & echo $! > {pidfile}"], log=logs.append)
    assert finished.code == 0
    assert finished.stdout.total > 0 and len(finished.stdout.data) <= process.CAPTURE
    _wait_exit(int(pidfile.read_text()))


# -- detached commands ----------------------------------------------------------------------


def test_a_detached_command_outlives_the_process_that_started_it(
    tmp_path: Path, kill_at_end: list[int]
) -> None:
    """``spawn_detached`` sets no death signal: the command runs on after its parent exits,
    in a session of its own, with its output in the given file."""
    log = tmp_path / "out.log"
    script = (
        "import os, sys\n"
        "from convergent.host.process import spawn_detached\n"
        f"fd = os.open({str(log)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)\n"
        "p = spawn_detached(['sh', '-c', 'echo up; exec sleep 60'], output=fd)\n"
        "print(p.pid, flush=True)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=BOUND, check=True
    )
    pid = int(parent.stdout)
    kill_at_end.append(pid)
    assert _alive(pid)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    fd = os.pidfd_open(pid)  # still running: its pidfd is not readable
    try:
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        os.close(fd)
    assert log.read_text() == "up\n"


def test_kill_group_sends_the_signal_asked_for(kill_at_end: list[int]) -> None:
    """A group that ignores SIGTERM but not SIGINT ends on ``sig=SIGINT`` before the grace.
    (SIGINT is set to its default in the child: a shell's background job, `make test &`,
    starts with it ignored, and a shell cannot trap what it was started ignoring.)"""
    child = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; exec sleep 60"],
        start_new_session=True,
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    kill_at_end.append(child.pid)

    async def stop() -> bool:
        return await process.kill_group(child.pid, grace=BOUND * 2, sig=signal.SIGINT)

    assert asyncio.run(asyncio.wait_for(stop(), BOUND))
    assert child.wait(timeout=BOUND) == -signal.SIGINT


def test_a_killed_command_takes_a_child_with_a_group_of_its_own(tmp_path: Path) -> None:
    """A child that left the command's group (setpgid) but not its session dies with the
    command: a cancelled run (as a timeout: one path) kills the group, then what is left
    of the session. Only a process that leaves the session (setsid, a daemon) outlives
    it."""
    from tests.waits import until_in

    mark = tmp_path / "pid"
    child = (
        f"import os,time; os.setpgid(0,0); open({str(mark)!r}, 'w').write(str(os.getpid()));"
        " time.sleep(1000)"
    )
    argv = ["sh", "-c", f'{sys.executable} -c "{child}" & wait']

    async def main() -> None:
        task = asyncio.create_task(process.run(argv))
        holds = lambda: mark.exists() and mark.read_text() != ""  # noqa: E731
        await asyncio.to_thread(until_in, tmp_path, holds, 20, "the child's pid")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    until_exited(int(mark.read_text()), 10)
