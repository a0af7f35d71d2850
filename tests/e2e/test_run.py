"""`convergent run` end to end: the real command on real files and processes in tmp_path."""

from __future__ import annotations

import re
import signal
import stat
from pathlib import Path

import pytest

from tests.e2e.agent import EXAMPLES, Agent, convergent
from tests.e2e.conftest import Hello

WATCHING = "converged; watching for changes (Ctrl-C to stop)"


def lines_about(stdout: str, resource: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(resource + ":")]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_converges_hello_with_one_line_per_change(hello: Hello) -> None:
    done = convergent(*hello.run_args("--converged-timeout", "0"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert hello.root.is_dir()
    assert mode(hello.root) == 0o755
    assert hello.f1.read_text() == "i am f1\n"
    assert hello.f2.read_text() == "i am f2\n"
    assert mode(hello.f2) == 0o600
    assert hello.built.read_text() == "i am f1\ni am f2\n"
    for path in (hello.root, hello.f1, hello.f2):
        assert len(lines_about(done.stdout, f"file[{path}]")) == 1, done.stdout
    (ran,) = lines_about(done.stdout, "exec[build]")
    assert re.fullmatch(r"exec\[build\]: ran \(\d+\.\d+ s\)", ran)
    assert lines_about(done.stdout, "noop[done]") == ["noop[done]: notified by exec[build]"]
    last = done.stdout.splitlines()[-1]
    assert re.fullmatch(
        r"resources: 5, repaired: 4 \(4 resources\), failed: 0, time: \d+\.\d+ s", last
    )


def test_run_creates_the_state_dir_mode_0700(hello: Hello) -> None:
    done = convergent(*hello.run_args("--converged-timeout", "0"))
    assert done.returncode == 0, done.stderr
    assert hello.state.is_dir()
    assert mode(hello.state) == 0o700


def test_second_run_reports_no_change(hello: Hello) -> None:
    first = convergent(*hello.run_args("--converged-timeout", "0"))
    assert first.returncode == 0, first.stderr
    again = convergent(*hello.run_args("--converged-timeout", "0"))
    assert again.returncode == 0, again.stderr
    (line,) = again.stdout.splitlines()
    assert line.startswith("resources: 5, repaired: 0, failed: 0,")


def test_noop_reports_would_change_with_diff_and_creates_nothing(hello: Hello) -> None:
    done = convergent(*hello.run_args("--converged-timeout", "0", "--noop"))
    out = done.stdout.splitlines()
    for path in (hello.root, hello.f1, hello.f2):
        assert any(line.startswith(f"file[{path}]: would change: ") for line in out), out
    assert "    +i am f1" in out  # the diff of f1's content, indented under its line
    assert out[-1].endswith("would change, 0 may change; nothing was changed")
    assert not hello.root.exists()
    assert not hello.state.exists()


def test_noop_on_a_fresh_host_exits_0_and_shows_refreshes(hello: Hello) -> None:
    done = convergent(*hello.run_args("--converged-timeout", "0", "--noop"))
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert any(line.startswith("exec[build]: would run: ") for line in out), out
    assert "  would refresh noop[done]" in out
    assert out[-1] == "noop: 4 would change, 0 may change; nothing was changed"


def test_bad_policy_exits_2_with_file_and_line_and_changes_nothing(tmp_path: Path) -> None:
    made = tmp_path / "made"
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "resources:\n"
        f"  - file: {made}\n"
        '    content: "x\\n"\n'
        "  - exec: build\n"
        '    cmd: ["true"]\n'
        "    comand: [true]\n",
        encoding="utf-8",
    )
    done = convergent("run", str(policy), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2
    assert f"{policy}:6:" in done.stderr
    assert "exec[build]" in done.stderr
    assert done.stderr.splitlines()[-1] == "nothing was changed"
    assert not made.exists()
    assert not (tmp_path / "state").exists()


def test_missing_policy_exits_2_naming_it(tmp_path: Path) -> None:
    done = convergent("run", str(tmp_path / "nope.yaml"), "--converged-timeout", "0")
    assert done.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file" in done.stderr


def test_failing_exec_exits_1_and_its_dependents_are_blocked(tmp_path: Path) -> None:
    after = tmp_path / "after"
    policy = tmp_path / "fail.yaml"
    policy.write_text(
        "resources:\n"
        "  - exec: fail\n"
        '    cmd: [sh, -c, "echo oops >&2; exit 3"]\n'
        f"  - file: {after}\n"
        '    content: "x\\n"\n'
        "    require: [exec[fail]]\n",
        encoding="utf-8",
    )
    done = convergent(
        "run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "state")
    )
    assert done.returncode == 1
    err = done.stderr.splitlines()
    assert any(line.startswith("exec[fail]: FAILED: ") for line in err), err
    assert f"file[{after}]: blocked: exec[fail] failed" in err
    assert "failed: 1, blocked: 1" in done.stdout.splitlines()[-1]
    assert not after.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_watching_run_cleanly_with_summary(hello: Hello, sig: int) -> None:
    with Agent(*hello.run_args()) as agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        agent.send(sig)
        assert agent.wait() == 0, agent.err
    assert agent.out[-1].startswith("resources: 5, repaired: 4 (4 resources), failed: 0,")
    assert hello.built.read_text() == "i am f1\ni am f2\n"


def test_deleted_file_is_restored_while_running(hello: Hello) -> None:
    with Agent(*hello.run_args()) as agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        hello.f1.unlink()
        agent.wait_for_line(lambda line: line == f"file[{hello.f1}]: created")
        assert hello.f1.read_text() == "i am f1\n"
        agent.wait_for_line(lambda line: line == "converged")
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    # f1 created again, and build ran again after it: two more repairs, no more resources
    assert agent.out[-1].startswith("resources: 5, repaired: 6 (4 resources), failed: 0,")


@pytest.mark.slow
def test_parallel_example_runs_four_commands(tmp_path: Path) -> None:
    done = convergent(
        "run",
        str(EXAMPLES / "parallel.yaml"),
        "--converged-timeout",
        "0",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert done.returncode == 0, done.stderr
    ran = [line for line in done.stdout.splitlines() if re.match(r"exec\[[^]]+\]: ran ", line)]
    assert len(ran) == 4, done.stdout
