"""``convergent`` as process 1 of its PID namespace, as a container's entry point: a real
namespace (``unshare --pid --fork --mount-proc``) around ``python -m convergent run``.
Process 1 reaps the orphans of the agent's commands, passes the signals sent to it on to
the agent and ends with the agent's exit status (cli/pid1.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.waits import open_fifo_writer, until_exited

BOUND = 20.0
UNSHARE = shutil.which("unshare")
_NAMESPACE = [str(UNSHARE), "--pid", "--fork", "--kill-child", "--mount-proc"]
TICKING = "resources:\n  - timer: tick\n    interval: 1\n"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or UNSHARE is None,
    reason="a PID namespace needs root and unshare (util-linux)",
)


class Agent:
    """``convergent run POLICY`` as process 1 of a new PID namespace; its output read
    line by line."""

    def __init__(
        self, tmp_path: Path, policy: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        path = tmp_path / "policy.yaml"
        path.write_text(policy)
        argv = [*_NAMESPACE, sys.executable, "-m", "convergent", "run", str(path)]
        argv += ["--state-dir", str(tmp_path / "state"), *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.seen = b""

    def until(self, text: str) -> str:
        """The output up to the first line (not yet returned) that holds ``text``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + BOUND
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], (text, self.seen)
            chunk = os.read(fd, 65536)
            assert chunk, (text, self.seen)
            self.seen += chunk
        at = self.seen.index(text.encode())
        end = self.seen.find(b"\n", at) + 1 or len(self.seen)
        said, self.seen = self.seen[:end], self.seen[end:]
        return said.decode()

    def init(self) -> int:
        """Process 1 of the namespace, as this namespace numbers it: unshare's child."""
        (pid,) = _children(self.proc.pid)
        return pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # unshare --kill-child: its process 1 gets SIGKILL with it
            self.proc.wait(BOUND)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


def _reaped(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` is gone (a zombie still takes a signal 0)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return True
    return False


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_orphans_of_the_agents_commands_are_reaped_by_process_1(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    orphans = f"for i in 1 2 3; do (read x < {fifo} > /dev/null 2>&1 &); done"
    agent = Agent(
        tmp_path,
        f'resources:\n  - exec: orphans\n    cmd: ["/bin/sh", "-c", "{orphans}"]\n'
        "  - timer: tick\n    interval: 1\n",
    )
    try:
        agent.until("exec[orphans]: ran")
        init = agent.init()
        left = [pid for pid in _children(init) if _comm(pid) == "sh"]
        assert len(left) == 3, [(pid, _comm(pid)) for pid in _children(init)]
        pidfds = [os.pidfd_open(pid) for pid in left]
        writer = open_fifo_writer(fifo, BOUND)
        os.write(writer, b"a\nb\nc\n")
        os.close(writer)
        for pid in left:
            until_exited(pid, BOUND)
        deadline = time.monotonic() + BOUND
        while not all(_reaped(pidfd) for pidfd in pidfds):  # looked at again at each tick
            assert time.monotonic() < deadline, "the orphans stay zombies"
            agent.until("timer[tick]")
        for pidfd in pidfds:
            os.close(pidfd)
        os.kill(init, signal.SIGTERM)  # docker stop
        agent.until("SIGTERM: stopping")
        assert agent.proc.wait(BOUND) == 0
    finally:
        agent.close()


def test_process_1_ends_with_the_agents_exit_status(tmp_path: Path) -> None:
    failing = 'resources:\n  - exec: fails\n    cmd: ["/bin/false"]\n'
    (tmp_path / "alone.yaml").write_text(failing)
    outside = subprocess.run(
        [sys.executable, "-m", "convergent", "run", str(tmp_path / "alone.yaml"),
         "--state-dir", str(tmp_path / "alone"), "--converged-timeout", "0"],
        capture_output=True, timeout=BOUND,
    )  # fmt: skip
    assert outside.returncode == 1, outside  # a resource failed
    agent = Agent(tmp_path, failing, "--converged-timeout", "0")
    try:
        assert agent.proc.wait(BOUND) == outside.returncode
        assert "exec[fails]: FAILED" in agent.until("exec[fails]: FAILED")
    finally:
        agent.close()


def test_an_agent_killed_ends_process_1_with_128_plus_the_signal(tmp_path: Path) -> None:
    agent = Agent(tmp_path, TICKING)
    try:
        agent.until("timer[tick]")
        (command,) = _children(agent.init())  # the agent: process 2
        os.kill(command, signal.SIGKILL)
        until_exited(command, BOUND)
        assert agent.proc.wait(BOUND) == 128 + signal.SIGKILL
    finally:
        agent.close()


def _read_until(fd: int, text: bytes, seen: bytes) -> bytes:
    deadline = time.monotonic() + BOUND
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], (text, seen)
        seen += os.read(fd, 65536)
    return seen


def test_ctrl_c_on_the_terminal_stops_the_agent_once(tmp_path: Path) -> None:
    """The terminal sends SIGINT to its foreground group: the agent's own, which process
    1 is not in (were it, it would pass the signal on and the agent say it twice)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(TICKING)
    master, terminal = pty.openpty()
    argv = [*_NAMESPACE, sys.executable, "-m", "convergent", "run", str(policy)]
    argv += ["--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(
        argv,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # its controlling terminal
    )
    os.close(terminal)
    try:
        seen = _read_until(master, b"timer[tick]", b"")
        os.write(master, b"\x03")  # Ctrl-C
        seen = _read_until(master, b"resources: ", seen)
        assert proc.wait(BOUND) == 0
        assert seen.count(b"SIGINT: stopping") == 1, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(BOUND)
        os.close(master)


@pytest.mark.parametrize(
    "sent",
    [signal.SIGPWR, signal.SIGRTMIN + 4],
    ids=["SIGPWR (lxc-stop)", "SIGRTMIN+4 (machinectl poweroff)"],
)
def test_a_container_managers_stop_request_stops_the_agent(tmp_path: Path, sent: int) -> None:
    agent = Agent(tmp_path, TICKING)
    try:
        agent.until("timer[tick]")
        os.kill(agent.init(), sent)
        agent.until("SIGTERM: stopping")
        assert agent.proc.wait(BOUND) == 0
    finally:
        agent.close()


def test_a_signal_the_agent_does_not_act_on_is_dropped(tmp_path: Path) -> None:
    """SIGUSR1 would end the agent (it has no handler); process 1 drops it, as the kernel
    drops it for a process 1 that has none."""
    agent = Agent(tmp_path, TICKING)
    try:
        agent.until("timer[tick]")
        os.kill(agent.init(), signal.SIGUSR1)
        agent.until("timer[tick]")  # a tick after it: still running
        agent.until("timer[tick]")
        os.kill(agent.init(), signal.SIGTERM)
        agent.until("SIGTERM: stopping")
        assert agent.proc.wait(BOUND) == 0
    finally:
        agent.close()


def test_a_signal_to_process_1s_group_reaches_the_agent_once(tmp_path: Path) -> None:
    """``timeout``, or a shell's job control, signals a whole process group: the agent's
    is its own, so it gets the signal once, from process 1."""
    agent = Agent(tmp_path, TICKING)
    try:
        agent.until("timer[tick]")
        os.killpg(agent.proc.pid, signal.SIGTERM)  # unshare's group, process 1's too
        said = agent.until("resources: ")
        assert agent.proc.wait(BOUND) == 0
        assert said.count("SIGTERM: stopping") == 1, said
    finally:
        agent.close()


def test_under_notify_socket_convergent_stays_process_1(tmp_path: Path) -> None:
    """systemd (``NotifyAccess=main``) and ``systemd-nspawn --notify-ready`` take readiness
    from process 1 only: with ``NOTIFY_SOCKET`` set there is no init, and READY=1 comes
    from process 1 itself (the sender's credentials, as the kernel gives them)."""
    address = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(address))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        agent = Agent(tmp_path, TICKING, env={"NOTIFY_SOCKET": str(address)})
        try:
            senders = set()
            deadline = time.monotonic() + BOUND
            while True:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([listener], [], [], left)[0], senders
                data, ancillary, _flags, _addr = listener.recvmsg(4096, 256)
                for level, kind, raw in ancillary:
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                        senders.add(struct.unpack("3i", raw[:12])[0])
                if b"READY=1" in data.split(b"\n"):
                    break
            assert senders == {agent.init()}
        finally:
            agent.close()
