"""One agent per state directory: real ``convergent run`` processes side by side."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

from convergent.render import WATCHING
from convergent.state import StateDB
from tests.e2e.agent import Agent, convergent


def _policy(tmp_path: Path, name: str, content: str) -> tuple[Path, Path]:
    target = tmp_path / "managed.conf"
    policy = tmp_path / name
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - file: {target}
                content: "{content}\\n"
            """
        ),
        encoding="utf-8",
    )
    return policy, target


def test_second_agent_on_one_state_dir_refuses_to_start(tmp_path: Path) -> None:
    """The second agent stops at start, names the directory and the first one's PID, and
    changes nothing: the two never fight over the files."""
    first_policy, target = _policy(tmp_path, "first.yaml", "first")
    second_policy, _ = _policy(tmp_path, "second.yaml", "second")
    state = tmp_path / "state"
    with Agent("run", str(first_policy), "--state-dir", str(state)) as first:
        first.wait_for_line(lambda line: line == WATCHING)
        second = convergent(
            "run", str(second_policy), "--state-dir", str(state), "--converged-timeout", "0"
        )
        assert second.returncode == 2, second.stderr
        assert f"state directory {state} is in use by another convergent" in second.stderr
        holder = f"(pid {first.proc.pid}: convergent run {first_policy} --state-dir {state})"
        assert holder in second.stderr
        assert "stop it, or use another state directory" in second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout == ""
        assert target.read_text() == "first\n"
        first.send(signal.SIGTERM)
        assert first.wait() == 0, first.err
    # The lock left with its holder: the second agent may run now.
    again = convergent(
        "run", str(second_policy), "--state-dir", str(state), "--converged-timeout", "0"
    )
    assert again.returncode == 0, again.stderr
    assert target.read_text() == "second\n"


def test_the_lock_dies_with_a_killed_agent(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path, "policy.yaml", "kept")
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as first:
        first.wait_for_line(lambda line: line == WATCHING)
        first.send(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    target.write_text("drifted\n")
    again = convergent("run", str(policy), "--state-dir", str(state), "--converged-timeout", "0")
    assert again.returncode == 0, again.stderr
    assert target.read_text() == "kept\n"


def test_noop_run_beside_an_agent_is_allowed(tmp_path: Path) -> None:
    """A --noop run only reads (shared lock, SQLite's WAL): it runs beside the agent."""
    policy, target = _policy(tmp_path, "policy.yaml", "agent")
    other, _ = _policy(tmp_path, "other.yaml", "other")
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        noop = convergent(
            "run", str(other), "--state-dir", str(state), "--converged-timeout", "0", "--noop"
        )
        assert noop.returncode == 0, noop.stderr
        assert f"file[{target}]: would change" in noop.stdout
        assert target.read_text() == "agent\n"
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err


def test_a_second_agent_never_generates_its_own_password(tmp_path: Path) -> None:
    target = tmp_path / "db.conf"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - password: db
              - file: {target}
                recv:
                  content: password[db].password
            """
        ),
        encoding="utf-8",
    )
    state = tmp_path / "state"
    with Agent("run", str(policy), "--state-dir", str(state)) as first:
        first.wait_for_line(lambda line: line == WATCHING)
        secret = target.read_text()
        second = convergent("run", str(policy), "--state-dir", str(state))
        assert second.returncode == 2, second.stderr
        assert "is in use by another convergent" in second.stderr
        assert target.read_text() == secret
        first.send(signal.SIGTERM)
        assert first.wait() == 0, first.err
    assert not any("password" in line for line in first.out[1:]), first.out
    with StateDB(state / "state.db", readonly=True) as db:
        assert db.get_secret("password[db]") == secret
