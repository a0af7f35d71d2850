"""``process``: a command kept running by the real ``convergent`` command, across agents.

Real processes, the real CLI, real pidfiles under a state directory in tmp_path. Every
wait is bounded and waits on an event (an output line of the agent, a pidfd), never on
a sleep. Each test marks its processes with a unique environment variable and kills
what carries it at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.errors import ParamError
from convergent.host.children import stat as proc_stat
from convergent.resources.process import Process
from convergent.resources.procfiles import LOG_LIMIT, TOKEN, Record, Store, boot_id
from tests.e2e.agent import Agent, convergent
from tests.waits import keepers_of, open_fifo_writer, until_exited, until_in, until_written

BOUND = 10.0
NAME = "process[app]"


class Case:
    """A policy with one ``process`` (plus extra entries), its state dir, and its marker."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.policy = root / "policy.yaml"
        self.state = root / "state"
        self.mark = uuid.uuid4().hex

    def write(self, cmd: list[str], extra: str = "", **params: object) -> None:
        lines = ["resources:", "  - process: app", f"    cmd: {json.dumps(cmd)}"]
        lines.append(f"    env: {{MARK: {self.mark}}}")
        lines += [f"    {key}: {json.dumps(value)}" for key, value in params.items()]
        self.policy.write_text("\n".join(lines) + "\n" + extra)

    def args(self, *extra: str) -> list[str]:
        return ["run", str(self.policy), "--state-dir", str(self.state), *extra]

    def once(self) -> subprocess.CompletedProcess[str]:
        done = convergent(*self.args("--converged-timeout", "0"))
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def marked(self) -> list[int]:
        """The live processes carrying this test's marker."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if f"MARK={self.mark}".encode() in environ.split(b"\0") and state not in b"ZX":
                found.append(int(entry))
        return sorted(found)

    @property
    def store(self) -> Store:
        return Store(str(self.state))


@pytest.fixture
def case(tmp_path: Path) -> Iterator[Case]:
    made = Case(tmp_path)
    yield made
    for pid in made.marked():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pid(line: str) -> int:
    return int(line.split("(pid ", 1)[1].split(")", 1)[0].split(";", 1)[0])


def _alive(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return raw.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


SLEEPER = ["sleep", "300"]


def test_a_killed_process_is_back_with_a_new_pid(case: Case) -> None:
    case.write(SLEEPER)
    with Agent(*case.args()) as agent:
        first = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        assert case.marked() == [first]
        os.kill(first, signal.SIGKILL)
        line = agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted"))
        assert line.endswith(f": pid {first} was killed by SIGKILL")
        second = _pid(line)
        assert second != first and case.marked() == [second]
        record = case.store.read(NAME)
        assert record is not None and record.pid == second


def test_it_outlives_a_run_once_agent_and_the_next_agent_adopts_it(case: Case) -> None:
    case.write(SLEEPER)
    first = case.once()
    pid = _pid(first.stdout)
    assert "started" in first.stdout and _alive(pid)
    second = case.once()  # the agent is gone; the next one finds the same process
    assert "repaired: 0" in second.stdout, second.stdout
    assert case.marked() == [pid]
    state = case.state / "processes"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for child in state.iterdir():
        assert stat.S_IMODE(child.stat().st_mode) == 0o600, child


@pytest.mark.parametrize("tick", [-1, 0], ids=["another-start-time", "same-start-tick"])
def test_a_record_naming_a_strangers_pid_is_neither_adopted_nor_killed(
    case: Case, tick: int
) -> None:
    """The recorded PID now belongs to a stranger (a hostile local user's process when we
    are root): with another start time, or within the same clock tick (start times count
    1/100 s) but not leading its own session as every process this kind starts does.
    ``stopped`` does not kill it, and ``running`` starts a process of its own beside it."""
    case.write(SLEEPER)
    pid = _pid(case.once().stdout)
    os.kill(pid, signal.SIGKILL)
    until_exited(pid, BOUND)
    hostile = {"user": 65534, "group": 65534} if os.geteuid() == 0 else {}
    stranger = subprocess.Popen(["sleep", "300"], **hostile)  # type: ignore[call-overload]
    try:
        record = case.store.read(NAME)
        seen = proc_stat(stranger.pid)
        assert record is not None and seen is not None and seen.session != stranger.pid
        case.store.write(
            Record(
                record.owner,
                record.boot,
                record.token,
                record.fingerprint,
                stranger.pid,
                seen.start + tick,
            )
        )
        case.write(SLEEPER, state="stopped")
        stopped = case.once()
        assert "repaired: 0," in stopped.stdout, stopped.stdout
        assert stranger.poll() is None
        case.write(SLEEPER)
        started = case.once()
        assert "is now another process" in started.stdout, started.stdout
        assert _pid(started.stdout) != stranger.pid and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=BOUND)


def test_an_agent_killed_before_recording_the_pid_leaves_a_process_the_next_one_finds(
    case: Case,
) -> None:
    """An intent record (PID 0) and a process carrying its token, as an agent killed
    between the spawn and the second record leaves them: adopted, not started twice."""
    case.write(SLEEPER)
    token = uuid.uuid4().hex
    fingerprint = Process("app", cmd=SLEEPER, env={"MARK": case.mark})._fingerprint()
    case.state.mkdir(mode=0o700)
    case.store.write(Record(NAME, boot_id(), token, fingerprint))
    env = {**os.environ, "MARK": case.mark, TOKEN: token}
    orphan = subprocess.Popen(SLEEPER, env=env, start_new_session=True)
    try:
        done = case.once()
        assert "repaired: 0" in done.stdout, done.stdout
        assert case.marked() == [orphan.pid]
    finally:
        orphan.kill()
        orphan.wait(timeout=BOUND)


def test_stopped_stops_it_and_its_whole_group(case: Case) -> None:
    cmd = ["sh", "-c", "trap 'exit 0' INT; sleep 300 & wait"]
    case.write(cmd, stop_signal="INT")
    pid = _pid(case.once().stdout)
    assert len(case.marked()) == 2  # the shell and its sleep
    case.write(cmd, stop_signal="INT", state="stopped", stop_timeout=5)
    done = case.once()
    assert f"{NAME}: stopped (pid {pid})" in done.stdout, done.stdout
    assert case.marked() == [] and case.store.read(NAME) is None
    assert "repaired: 0" in case.once().stdout
    case.write(cmd, stop_signal="INT")
    assert f"{NAME}: started (pid" in case.once().stdout  # a fresh start, not a "restart"


def test_a_process_deaf_to_its_stop_signal_is_killed_after_stop_timeout(case: Case) -> None:
    cmd = ["sh", "-c", "trap '' TERM; echo ready; exec sleep 300"]
    case.write(cmd)
    pid = _pid(case.once().stdout)
    case.write(cmd, state="stopped", stop_timeout=0.2)
    assert f"stopped (pid {pid})" in case.once().stdout
    assert case.marked() == []


def test_a_notification_restarts_it(case: Case) -> None:
    conf = case.root / "app.conf"
    extra = (
        f"    require: [file[{conf}]]\n"
        f"  - file: {conf}\n"
        '    content: "port 1\\n"\n'
        "    notify: [process[app]]\n"
    )
    case.write(SLEEPER, extra)
    with Agent(*case.args()) as agent:
        first = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        agent.wait_for_line(lambda line: line.startswith("converged"))
        conf.write_text("edited by hand\n")
        line = agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted on refresh"))
        assert _pid(line) != first and case.marked() == [_pid(line)]


def test_a_change_of_command_restarts_it(case: Case) -> None:
    case.write(SLEEPER)
    first = _pid(case.once().stdout)
    case.write(["sleep", "301"])
    done = case.once()
    assert "its command or settings changed" in done.stdout, done.stdout
    second = _pid(done.stdout)
    assert second != first and case.marked() == [second]


def test_its_log_is_capped_and_rotated(case: Case) -> None:
    """The first run writes 3 MB and exits; the restart finds the log rotated."""
    flag = case.root / "flag"
    script = (
        f"if [ ! -e {flag} ]; then touch {flag}; head -c 3000000 /dev/zero | tr '\\0' x; "
        "exit 3; fi; echo second; exec sleep 300"
    )
    case.write(["sh", "-c", script])
    with Agent(*case.args()) as agent:
        line = agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted"))
        assert line.endswith("exited with code 3")
    log = Path(case.store.log_path(NAME))
    old = Path(f"{log}.1")
    assert log.stat().st_size <= LOG_LIMIT
    assert old.read_bytes() == b"x" * LOG_LIMIT
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_a_missing_program_fails_with_its_name(case: Case) -> None:
    case.write(["/nonexistent/daemon"])
    done = convergent(*case.args("--converged-timeout", "0"))
    assert done.returncode != 0
    assert "command not found: /nonexistent/daemon" in done.stdout + done.stderr
    assert case.store.read(NAME) is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cmd": []}, "cmd"),
        ({"cmd": ["x"], "cwd": "relative"}, "cwd"),
        ({"cmd": ["x"], "stop_signal": "NOPE"}, "stop_signal"),
        ({"cmd": ["x"], "stop_timeout": 0}, "stop_timeout"),
        ({"cmd": ["x"], "user": -1}, "user"),
        ({"cmd": ["x"], "env": {"A=B": "x"}}, "env"),
        ({"cmd": ["x"], "env": {"CONVERGENT_RUN": "x"}}, "env"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ParamError) as caught:
        Process("app", **fields)
    assert caught.value.field == field


def test_removed_from_the_policy_with_reverse_it_is_stopped(case: Case) -> None:
    case.write(SLEEPER, meta={"reverse": True})
    with Agent(*case.args()) as agent:
        pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        agent.wait_for_line(lambda line: line.startswith("converged"))
        case.policy.write_text("resources:\n  - noop: left\n")
        line = agent.wait_for_line(lambda line: line.startswith(f"{NAME}: reversed"))
        assert line == f"{NAME}: reversed: stopped (pid {pid})"
        assert case.marked() == []


def test_noop_starts_nothing(case: Case) -> None:
    case.write(SLEEPER)
    done = convergent(*case.args("--noop", "--converged-timeout", "0"))
    assert "process[app]: would change: start: sleep 300" in done.stdout, done.stdout
    assert case.marked() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_it_runs_as_the_user_asked_for_and_cannot_touch_its_records(case: Case) -> None:
    """As nobody (65534) the process runs with that uid and gid; its record and log stay
    root's, 0600, in a 0700 directory it cannot enter."""
    case.write(
        ["sh", "-c", f"id -u; id -g; cat {case.state}/processes/* 2>&1; exec sleep 300"],
        user="nobody",
        cwd="/",
    )
    pid = _pid(case.once().stdout)
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65534"] * 4
    log = Path(case.store.log_path(NAME))
    assert log.stat().st_uid == 0 and stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_process_run_as_a_user_enters_its_cwd_as_that_user(case: Case) -> None:
    """The start's ``chdir`` is made as the user: a directory she may not enter (the
    test's own, inside root's 0700 ``pytest-of-root``) is refused, not entered as root."""
    case.write(["sleep", "300"], user="nobody", cwd=str(case.root))
    done = convergent(*case.args("--converged-timeout", "0"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cwd {case.root}: the command's user may not enter it" in done.stdout + done.stderr
    assert case.marked() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_root_process_refuses_another_users_symlink_as_its_cwd(case: Case) -> None:
    """A root process's ``cwd`` is found as every path the agent changes (and entered
    through the directory found): nobody's symlink into root's directory is refused."""
    hers = case.root / "hers"
    hers.mkdir()
    os.chown(hers, 65534, 65534)
    (hers / "work").symlink_to(case.root)
    os.chown(hers / "work", 65534, 65534, follow_symlinks=False)
    case.write(["sleep", "300"], cwd=str(hers / "work"))
    done = convergent(*case.args("--converged-timeout", "0"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the symlink {hers}/work is owned by nobody" in done.stdout + done.stderr
    assert case.marked() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_process_run_as_a_user_may_open_its_output_again(case: Case) -> None:
    """A server told to log to /dev/stderr (nginx's ``error_log /dev/stderr``) opens its
    stderr again by name: the pipe is the user's, as under a shell, while the log and
    the keeper stay root's."""
    script = "echo plain; echo again >/dev/stderr; echo and-again >/dev/stdout; exec sleep 300"
    case.write(["sh", "-c", script], user="nobody", cwd="/")
    case.once()
    log = Path(case.store.log_path(NAME))
    expected = b"plain\nagain\nand-again\n"
    until_written(log, lambda: log.read_bytes() == expected, BOUND, "its three lines")
    assert log.stat().st_uid == 0 and stat.S_IMODE(log.stat().st_mode) == 0o600
    (keeper,) = keepers_of(log)
    assert os.stat(f"/proc/{keeper}").st_uid == 0


def test_a_killed_agent_leaves_it_running_and_the_next_agent_adopts_it(case: Case) -> None:
    """SIGKILL of the agent itself: the process is not the agent's child to reap (no death
    signal, no children record), and the next agent adopts it."""
    case.write(SLEEPER)
    with Agent(*case.args()) as agent:
        pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        agent.wait_for_line(lambda line: line.startswith("converged"))
        agent.send(signal.SIGKILL)
        agent.wait()
    assert _alive(pid)
    assert "repaired: 0" in case.once().stdout
    assert case.marked() == [pid]


def test_a_log_growing_past_the_limit_is_rotated_while_it_runs(case: Case) -> None:
    script = "head -c 1500000 /dev/zero | tr '\\0' y; exec sleep 300"
    case.write(["sh", "-c", script])
    with Agent(*case.args()) as agent:
        pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        log = Path(case.store.log_path(NAME))
        old = Path(f"{log}.1")
        until_in(log.parent, lambda: old.exists() and log.exists(), BOUND, "the rotation")
        until_written(log, lambda: _size(log) == 1500000 - LOG_LIMIT, BOUND, "the rest")
        assert old.stat().st_size == LOG_LIMIT and old.read_bytes()[:10] == b"y" * 10
        assert case.marked() == [pid]  # rotated under it: it runs on


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def test_its_output_reaches_the_log_after_the_agent_is_killed(case: Case) -> None:
    """SIGKILL of the agent: the log's keeper, though the agent's child, has no death
    signal and a session of its own: it outlives the agent, and what the process writes
    afterwards (once the test opens its FIFO) lands in the log."""
    go = case.root / "go"
    os.mkfifo(go)
    case.write(["sh", "-c", f"echo before; cat {go}; echo after; exec sleep 300"])
    with Agent(*case.args()) as agent:
        agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started"))
        agent.wait_for_line(lambda line: line.startswith("converged"))
        agent.send(signal.SIGKILL)
        agent.wait()
    log = Path(case.store.log_path(NAME))
    assert len(keepers_of(log)) == 1
    os.close(open_fifo_writer(go, BOUND))
    until_written(log, lambda: log.read_bytes() == b"before\nafter\n", BOUND, "the line after")


def test_stopping_it_ends_the_keeper_of_its_log(case: Case) -> None:
    case.write(SLEEPER)
    case.once()
    log = Path(case.store.log_path(NAME))
    (keeper,) = keepers_of(log)
    case.write(SLEEPER, state="stopped")
    case.once()
    until_exited(keeper, BOUND)  # the pipe's last writer is gone
    assert keepers_of(log) == []


def test_a_restart_hands_the_log_to_a_new_keeper(case: Case) -> None:
    """The old process and its keeper end; the new keeper appends to the same log."""
    case.write(["sh", "-c", "echo one; exec sleep 300"])
    case.once()
    log = Path(case.store.log_path(NAME))
    (first,) = keepers_of(log)
    until_written(log, lambda: log.read_bytes() == b"one\n", BOUND, "the first line")
    case.write(["sh", "-c", "echo two; exec sleep 301"])
    case.once()
    until_exited(first, BOUND)
    (second,) = keepers_of(log)
    assert second != first
    until_written(log, lambda: log.read_bytes() == b"one\ntwo\n", BOUND, "the second line")


def test_restarts_under_one_agent_keep_one_keeper(case: Case) -> None:
    """The agent holds its end of the keeper's pipe: each restart's process writes to the
    same keeper (no interpreter started per restart), in the same log."""
    case.write(["sh", "-c", "echo up; exec sleep 300"])
    log = Path(case.store.log_path(NAME))
    with Agent(*case.args()) as agent:
        pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        (keeper,) = keepers_of(log)
        for _ in range(2):
            os.kill(pid, signal.SIGKILL)
            pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted")))
        until_written(log, lambda: log.read_bytes() == b"up\n" * 3, BOUND, "three starts")
        assert keepers_of(log) == [keeper]


def test_a_killed_keeper_restarts_the_process_with_a_new_one(case: Case) -> None:
    """Its keeper killed (the OOM killer, a ``pkill python3``), the process's output has
    nowhere to go (a process ignoring SIGPIPE would lose it all, silently): the agent
    restarts it with a new keeper, and says why."""
    case.write(["sh", "-c", "trap '' PIPE; echo up; exec sleep 300"])
    log = Path(case.store.log_path(NAME))
    with Agent(*case.args()) as agent:
        pid = _pid(agent.wait_for_line(lambda line: line.startswith(f"{NAME}: started")))
        until_written(log, lambda: log.read_bytes() == b"up\n", BOUND, "the first start")
        (keeper,) = keepers_of(log)
        os.kill(keeper, signal.SIGKILL)
        line = agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted"))
        expected = "the keeper of its log was killed by SIGKILL (its output had nowhere to go)"
        assert line.endswith(expected), line
        assert _pid(line) != pid
        until_written(log, lambda: log.read_bytes() == b"up\n" * 2, BOUND, "the restart")
        (second,) = keepers_of(log)
        assert second != keeper


def test_a_process_making_its_output_non_blocking_does_not_pass_it_on(case: Case) -> None:
    """Each start gets a description of the pipe of its own: the first process sets
    O_NONBLOCK on its stdout and exits; the restart's stdout still blocks (a shared one
    would make its writes fail with EAGAIN whenever the keeper lags)."""
    flag = case.root / "flag"
    python = sys.executable
    script = (
        f"if [ ! -e {flag} ]; then touch {flag}; "
        f"{python} -c 'import os; os.set_blocking(1, False)'; exit 3; fi; "
        f"{python} -c 'import os; print(\"blocking:\", os.get_blocking(1))'; exec sleep 300"
    )
    case.write(["sh", "-c", script])
    log = Path(case.store.log_path(NAME))
    with Agent(*case.args()) as agent:
        agent.wait_for_line(lambda line: line.startswith(f"{NAME}: restarted"))
        until_written(log, lambda: b"blocking" in log.read_bytes(), BOUND, "the second start")
    assert log.read_bytes() == b"blocking: True\n"


@pytest.mark.parametrize("through", ["a path", "a symlink"])
def test_a_process_writing_straight_to_its_log_is_restarted_with_a_keeper(
    case: Case, through: str
) -> None:
    """A process an older convergent started writes to its log file itself, which no
    keeper caps: the next run restarts it, with a keeper, and says why (also
    with the state directory given through a symlink: the files are compared, not
    their names)."""
    cmd = ["sh", "-c", "echo started; exec sleep 300"]
    case.write(cmd)
    if through == "a symlink":
        (case.root / "real-state").mkdir(mode=0o700)
        case.state.symlink_to(case.root / "real-state")
    store = case.store
    log = Path(store.log_path(NAME))
    log.parent.mkdir(parents=True, mode=0o700)
    token = uuid.uuid4().hex
    with log.open("ab") as out:
        old = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "MARK": case.mark, TOKEN: token},
        )
    seen = proc_stat(old.pid)
    assert seen is not None
    fingerprint = Process(NAME.split("[")[1][:-1], cmd=cmd, env={"MARK": case.mark})._fingerprint()
    store.write(Record(NAME, boot_id(), token, fingerprint, old.pid, seen.start))
    done = case.once()
    assert (
        f"{NAME}: restarted" in done.stdout
        and "it writes straight to its log (an older convergent started it)" in done.stdout
    ), done.stdout
    old.wait(BOUND)
    new = _pid(done.stdout.split(f"{NAME}: restarted", 1)[1])
    assert os.readlink(f"/proc/{new}/fd/1").startswith("pipe:")
    assert len(keepers_of(log)) == 1
