"""``convergent run --max-runtime N``: the run stops after N seconds as SIGTERM stops it
(what was running is cancelled, its command's group killed), says what had not settled,
and exits 1 if it had not converged, 0 if it had (mgmt's ``--max-runtime``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.cli.test_service import Systemd
from tests.waits import until_exited

BOUND = 60.0


def _run(
    tmp_path: Path, policy: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    return subprocess.run(
        [sys.executable, "-m", "convergent", "run", str(path), "--state-dir",
         str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=BOUND, env={**os.environ, **(env or {})},
    )  # fmt: skip


@contextlib.contextmanager
def _killed_at_end(pid_file: Path) -> Iterator[None]:
    """The command that wrote its PID to ``pid_file`` is SIGKILLed at the end if it runs
    (through a pidfd opened while it still runs ``sleep``)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            pidfd = os.pidfd_open(pid)
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            finally:
                os.close(pidfd)


def _hanging(pid_file: Path, name: str = "hangs") -> str:
    return (
        f'  - exec: "{name}"\n'
        f'    cmd: ["/bin/sh", "-c", "echo $$ > {pid_file}; exec sleep 300"]\n'
        "    timeout: null\n"
    )


def test_a_run_that_does_not_converge_in_time_stops_and_fails(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    waiting = "".join(
        f'  - file: "{tmp_path / f"after{i}"}"\n    content: "x\\n"\n    require: [exec[hangs]]\n'
        for i in range(7)
    )  # declared before what they wait for: the one at work is named first all the same
    with _killed_at_end(pid_file):
        done = _run(
            tmp_path,
            "resources:\n" + waiting + _hanging(pid_file),
            "--converged-timeout", "0", "--max-runtime", "3",
        )  # fmt: skip
        assert done.returncode == 1, done
        said = "max runtime (3 s) reached before exec[hangs] (running) and 7 waiting settled"
        assert f"{said}: stopping" in done.stderr, done.stderr
        assert not (tmp_path / "after0").exists()  # what waited on it never ran
        until_exited(int(pid_file.read_text()), 10)  # the command was killed with the run


def test_a_resource_name_cannot_add_lines_to_systemds_messages(tmp_path: Path) -> None:
    """The names in the stopping note go to systemd's STATUS= too: a newline in one is
    escaped, not a line of the notify message (MAINPID=...)."""
    systemd = Systemd(str(tmp_path / "notify"))
    pid_file = tmp_path / "pid"
    with _killed_at_end(pid_file):
        done = _run(
            tmp_path,
            "resources:\n" + _hanging(pid_file, "x\\nMAINPID=1"),
            "--max-runtime", "3", env={"NOTIFY_SOCKET": str(tmp_path / "notify")},
        )  # fmt: skip
        assert done.returncode == 1, done
        stopping = systemd.until("STOPPING=1")
        assert len(stopping) == 2 and stopping[1].startswith("STATUS=stopping (max runtime")
        assert "exec[x\\nMAINPID=1] (running)" in stopping[1], stopping
        assert not any(line.startswith("MAINPID") for line in systemd.seen), systemd.seen


def test_a_converged_agent_stopped_by_its_max_runtime_exits_0(tmp_path: Path) -> None:
    target = tmp_path / "made"
    done = _run(tmp_path, f'resources:\n  - file: "{target}"\n    content: "x\\n"\n',
                "--max-runtime", "2")  # fmt: skip
    assert done.returncode == 0, done
    assert target.read_text() == "x\n"
    assert "max runtime (2 s) reached: stopping" in done.stderr, done.stderr
    assert "resources: 1, repaired: 1" in done.stdout + done.stderr


def test_a_run_that_converges_first_ends_as_usual(tmp_path: Path) -> None:
    target = tmp_path / "made"
    policy = f'resources:\n  - file: "{target}"\n    content: "x\\n"\n'
    done = _run(tmp_path, policy, "--converged-timeout", "0", "--max-runtime", "30")
    assert done.returncode == 0, done
    assert "max runtime" not in done.stdout + done.stderr


def test_a_bad_max_runtime_is_refused_before_anything_runs(tmp_path: Path) -> None:
    target = tmp_path / "made"
    policy = f'resources:\n  - file: "{target}"\n    content: "x\\n"\n'
    for value in ("0", "-1", "nan", "inf", "soon"):
        done = _run(tmp_path, policy, f"--max-runtime={value}")
        assert done.returncode == 2, (value, done)
        assert "--max-runtime" in done.stderr, done.stderr
    remote = _run(tmp_path, policy, "--max-runtime", "5", "--remote", "ssh://root@127.0.0.1:1")
    assert remote.returncode == 2
    assert "a run on remote hosts does not take it" in remote.stderr, remote.stderr
    assert not target.exists()
