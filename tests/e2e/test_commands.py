"""Commands run by the real ``convergent`` command: they end with their own exit, die
with the agent, are never run twice at once after a kill -9, time out, and cannot flood
the output. Every wait is bounded; kills happen on a line of output, never after a sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.policy.reference import render_reference
from convergent.resources.base import builtin_kinds
from convergent.resources.exec import Exec
from tests.e2e.agent import Agent, convergent
from tests.waits import until_exited

WATCHING = "converged; watching for changes (Ctrl-C to stop)"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of ``pid``; None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


def _running(*, pgrp: int | None = None, session: int | None = None) -> list[int]:
    """PIDs of the live (not zombie) processes of a process group or a session."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is None or st[0] in ("Z", "X"):
            continue
        if (pgrp is not None and st[1] == pgrp) or (session is not None and st[2] == session):
            found.append(int(entry))
    return found


def _wait_exit(pid: int, bound: float = 10.0) -> None:
    until_exited(pid, bound)


@pytest.fixture
def leftovers(kill_at_end: list[int]) -> list[int]:
    """PIDs a test leaves behind on purpose (daemons), killed at the end."""
    return kill_at_end


@pytest.fixture
def sessions() -> Iterator[list[int]]:
    """Sessions whose processes are killed at the end, should a failing test leave any."""
    ids: list[int] = []
    yield ids
    for session in ids:
        for pid in _running(session=session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- the command's own exit ends it (issue 17, item 11; issue 8, bug 2) ----------------


@pytest.mark.timeout(60)
def test_a_daemonizing_command_ends_the_run_at_its_own_exit(
    tmp_path: Path, leftovers: list[int]
) -> None:
    """Both commands leave a process holding their stdout for minutes: the one-shot run
    still ends (well inside the 30 s bound of ``convergent``) and says nothing more."""
    daemon, background = tmp_path / "daemon.pid", tmp_path / "background.pid"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
resources:
  - exec: daemon
    cmd: "(setsid sh -c 'echo $$ > {daemon}; exec sleep 300' &); echo started"
    shell: true
  - exec: background
    cmd: "sh -c 'sleep 300 & echo $! > {background}'"
    shell: true
""",
    )
    try:
        done = convergent(
            "run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0"
        )
    finally:
        for pidfile in (daemon, background):
            if pidfile.exists():
                leftovers.append(int(pidfile.read_text()))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "exec[daemon]: stdout: started" in done.stdout
    assert len(leftovers) == 2
    for pid in leftovers:  # left alone: what a command started and left is its business
        assert _stat(pid) is not None and _stat(pid)[0] != "Z"  # type: ignore[index]


@pytest.mark.timeout(60)
def test_sigterm_while_a_daemon_holds_the_output_ends_the_agent_quietly(
    tmp_path: Path, leftovers: list[int]
) -> None:
    daemon = tmp_path / "daemon.pid"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
resources:
  - exec: daemon
    cmd: "(setsid sh -c 'echo $$ > {daemon}; exec sleep 300' &); echo started"
    shell: true
    creates: {daemon}
""",
    )
    with Agent("run", str(policy), "--state-dir", str(tmp_path / "s")) as agent:
        try:
            agent.wait_for_line(lambda line: line == WATCHING)
        finally:
            if daemon.exists():
                leftovers.append(int(daemon.read_text()))
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    assert not [line for line in agent.err if "Exception ignored" in line], agent.err
    assert agent.err == ["SIGTERM: stopping"]


# -- timeouts (item 12) -----------------------------------------------------------------


def test_exec_times_out_after_300_s_unless_told_otherwise() -> None:
    assert Exec("x", cmd=["true"]).params.timeout == 300
    assert Exec("x", cmd=["true"], timeout=None).params.timeout is None
    row = next(
        line
        for line in render_reference(builtin_kinds()).split("# exec\n", 1)[1].splitlines()
        if line.startswith("| `timeout` |")
    )
    assert row.startswith("| `timeout` | float or null | `300` |"), row


def test_a_command_that_never_ends_is_killed_with_its_group_at_the_timeout(
    tmp_path: Path,
) -> None:
    pgid = tmp_path / "pgid"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
resources:
  - exec: forever
    cmd: "echo $$ > {pgid}; sleep infinity & sleep infinity"
    shell: true
    timeout: 0.5
""",
    )
    done = convergent(
        "run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0"
    )
    assert done.returncode == 1, done.stderr
    assert (
        "exec[forever]: FAILED: timed out after 0.5 s; the process group was killed "
        "(raise `timeout:` if the command needs longer; `timeout: null` for none)"
    ) in done.stderr + done.stdout
    assert _running(pgrp=int(pgid.read_text())) == []  # convergent waited until all were gone


# -- bounded output (item 13) -----------------------------------------------------------


def test_a_flood_of_output_reaches_the_report_capped_and_counted(tmp_path: Path) -> None:
    policy = _write(
        tmp_path / "p.yaml",
        """
resources:
  - exec: chatty
    cmd: "yes 'a line of output' | head -c 20000000; echo last words >&2; exit 3"
    shell: true
""",
    )
    done = convergent(
        "run", str(policy), "--state-dir", str(tmp_path / "s"), "--converged-timeout", "0"
    )
    assert done.returncode == 1
    assert len(done.stdout) + len(done.stderr) < 200_000  # 20 MB went in
    assert "exec[chatty]: stdout: ... (only the first 64 KiB are shown)" in done.stdout
    assert "exec[chatty]: stdout: ... 19 MiB more not shown" in done.stdout
    assert "exec[chatty]: FAILED: exited with code 3: last words" in done.stderr + done.stdout


# -- kill -9 of the agent (item 2) --------------------------------------------------------


def _nested(log: Path, seconds: int = 3) -> list[str]:
    """A command whose work runs in a grandchild of the agent (PR_SET_PDEATHSIG does not
    reach it): the outer shell waits for the inner one."""
    inner = f"echo start >> {log}; echo start $$; sleep {seconds}; echo end >> {log}"
    return ["sh", "-c", f"sh -c '{inner}'; true"]


def _started_session(agent: Agent) -> tuple[int, int]:
    """(PID of the inner shell, its session) once its ``start`` line is printed."""
    line = agent.wait_for_line(lambda text: ": stdout: start " in text)
    pid = int(line.rsplit(" ", 1)[1])
    st = _stat(pid)
    assert st is not None
    return pid, st[2]


@pytest.mark.timeout(90)
def test_refresh_exec_never_runs_twice_at_once(tmp_path: Path, sessions: list[int]) -> None:
    root, log = tmp_path / "root", tmp_path / "log"
    root.mkdir()
    cmd = json.dumps(_nested(log))
    policy = _write(
        tmp_path / "p.yaml",
        f"""
resources:
  - file: {root}/conf
    content: "v1\\n"
    notify: [exec[restart]]
  - exec: restart
    cmd: {cmd}
    refresh_only: true
""",
    )
    state = str(tmp_path / "s")
    with Agent("run", str(policy), "--state-dir", state) as agent:
        _, session = _started_session(agent)
        sessions.append(session)
        agent.proc.kill()  # kill -9 in the middle of the refresh
        agent.wait()
    again = convergent("run", str(policy), "--state-dir", state, "--converged-timeout", "0")
    assert again.returncode == 0, again.stderr
    assert "exec[restart]: ran (" in again.stdout  # the refresh was not lost
    assert log.read_text().split() == ["start", "start", "end"]  # never two at once
    assert _running(session=session) == []


@pytest.mark.timeout(60)
def test_commands_die_with_a_killed_agent(tmp_path: Path, sessions: list[int]) -> None:
    """The command itself dies with the agent (a run's first command is forked with
    PR_SET_PDEATHSIG while the spawner starts); what it started dies when the next agent
    opens the state directory, before it runs anything."""
    log = tmp_path / "log"
    policy = _write(
        tmp_path / "p.yaml",
        f"""
resources:
  - exec: work
    cmd: {json.dumps(_nested(log, 300))}
""",
    )
    state = str(tmp_path / "s")
    with Agent("run", str(policy), "--state-dir", state) as agent:
        inner, session = _started_session(agent)
        sessions.append(session)
        children = _running(session=session)
        assert session in children and inner in children
        agent.proc.kill()
        agent.wait()
    _wait_exit(session)  # the direct child: killed by the kernel with its parent
    empty = _write(tmp_path / "empty.yaml", "resources: []\n")
    nxt = convergent("run", str(empty), "--state-dir", state, "--converged-timeout", "0")
    assert nxt.returncode == 0, nxt.stderr
    assert _running(session=session) == []
    assert log.read_text().split() == ["start"]
    assert os.listdir(os.path.join(state, "children")) == []


def test_reap_never_kills_a_reused_pid(tmp_path: Path, leftovers: list[int]) -> None:
    """A killed agent's record names a session whose leader's PID now belongs to another
    process (another start time): the next agent removes the record and kills nothing."""
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    leftovers.append(stranger.pid)
    raw = Path(f"/proc/{stranger.pid}/stat").read_bytes()
    start = int(raw[raw.rfind(b")") + 2 :].split()[19])
    state = tmp_path / "s"
    children = state / "children"
    children.mkdir(parents=True, mode=0o700)
    record = children / f"{stranger.pid}-{start - 1}.json"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    record.write_text(
        json.dumps(
            {
                "boot": boot,
                "agent": 1,  # PID 1 with another start time: that agent is gone
                "agent_start": -1,
                "session": stranger.pid,
                "start": start - 1,  # the recorded command started before this process
                "token": "0123456789abcdef",
                "owner": "exec[x]",
            }
        )
    )
    empty = _write(tmp_path / "empty.yaml", "resources: []\n")
    done = convergent("run", str(empty), "--state-dir", str(state), "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    assert _running(session=stranger.pid) == [stranger.pid]
    assert not record.exists()
    stranger.kill()
    stranger.wait(timeout=10)
