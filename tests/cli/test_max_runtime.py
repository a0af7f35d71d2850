"""``convergent run --max-runtime N``: the run stops after N seconds as SIGTERM stops it
(what was running is cancelled, its command's group killed), says what had not settled,
and exits 1 if it had not converged, 0 if it had (mgmt's ``--max-runtime``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.waits import until_exited

BOUND = 60.0


def _run(tmp_path: Path, policy: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    return subprocess.run(
        [sys.executable, "-m", "convergent", "run", str(path), "--state-dir",
         str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=BOUND,
    )  # fmt: skip


def test_a_run_that_does_not_converge_in_time_stops_and_fails(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    policy = (
        "resources:\n  - exec: hangs\n"
        f'    cmd: ["/bin/sh", "-c", "echo $$ > {pid_file}; exec sleep 300"]\n'
        "    timeout: null\n"
        f'  - file: "{tmp_path / "after"}"\n    content: "x\\n"\n    require: [exec[hangs]]\n'
    )
    done = _run(tmp_path, policy, "--converged-timeout", "0", "--max-runtime", "3")
    assert done.returncode == 1, done
    assert "max runtime (3 s) reached before exec[hangs] (" in done.stderr, done.stderr
    assert "stopping" in done.stderr
    assert not (tmp_path / "after").exists()  # what waited on it never ran
    until_exited(int(pid_file.read_text()), 10)  # the command was killed with the run


def test_a_converged_agent_stopped_by_its_max_runtime_exits_0(tmp_path: Path) -> None:
    target = tmp_path / "made"
    done = _run(tmp_path, f'resources:\n  - file: "{target}"\n    content: "x\\n"\n',
                "--max-runtime", "0.5")  # fmt: skip
    assert done.returncode == 0, done
    assert target.read_text() == "x\n"
    assert "max runtime (0.5 s) reached: stopping" in done.stderr, done.stderr
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
    remote = _run(tmp_path, policy, "--max-runtime", "5", "--remote", "ssh://root@127.0.0.1")
    assert remote.returncode == 2
    assert "a run on remote hosts does not take it" in remote.stderr, remote.stderr
    assert not target.exists()
