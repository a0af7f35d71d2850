"""A damaged or vanished state database stops the agent with the way out, and the way out
works: ``convergent state check | restore | reset``. Real runs of the real command."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from convergent.render import WATCHING
from convergent.state import StateDB
from tests.e2e.agent import Agent, convergent


class Host:
    """A policy whose file receives a password kept in the state database."""

    def __init__(self, tmp_path: Path) -> None:
        self.state = tmp_path / "state"
        self.db = self.state / "state.db"
        self.backup = self.state / "state.db.backup"
        self.target = tmp_path / "db.conf"
        self.policy = tmp_path / "policy.yaml"
        self.policy.write_text(
            textwrap.dedent(
                f"""\
                resources:
                  - password: db
                  - file: {self.target}
                    mode: "0600"
                    recv:
                      content: password[db].password
                """
            ),
            encoding="utf-8",
        )

    def run(self, *extra: str) -> tuple[int, str, str]:
        done = convergent(
            "run", str(self.policy), "--state-dir", str(self.state), "--converged-timeout", "0",
            *extra,
        )  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    def state_cmd(self, *args: str) -> tuple[int, str, str]:
        done = convergent("state", *args, "--state-dir", str(self.state))
        return done.returncode, done.stdout, done.stderr

    def secret_in(self, db: Path) -> str | None:
        with StateDB(db, readonly=True) as state:
            return state.get_secret("password[db]")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path)
    code, _, err = host.run()
    assert code == 0, err
    assert len(host.target.read_text()) == 32
    return host


def _empty(db: Path) -> None:
    db.write_bytes(b"")


def _half(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def _garbage_in_a_middle_page(db: Path) -> None:
    size = db.stat().st_size
    assert size >= 5 * 4096
    with db.open("r+b") as f:
        f.seek(2 * 4096)
        f.write(os.urandom(4096))


def _deleted(db: Path) -> None:
    db.unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated to 0 bytes": _empty,
    "truncated to half": _half,
    "garbage in a middle page": _garbage_in_a_middle_page,
    "deleted": _deleted,
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_database_stops_the_agent_with_the_way_out(host: Host, damage: str) -> None:
    secret = host.target.read_text()
    target_stat = host.target.stat()
    DAMAGE[damage](host.db)
    damaged = host.db.read_bytes() if host.db.exists() else None
    for noop in ((), ("--noop",)):
        code, out, err = host.run(*noop)
        assert code == 2, (out, err)
        assert "Traceback" not in err
        assert f"state database {host.db}: " in err
        for command in ("check", "restore", "reset --yes"):
            assert f"convergent state {command} --state-dir {host.state}" in err, err
        assert "nothing was changed" in err
    # Nothing was regenerated, recreated or rewritten.
    assert (host.db.read_bytes() if host.db.exists() else None) == damaged
    assert host.target.read_text() == secret
    assert host.target.stat().st_mtime_ns == target_stat.st_mtime_ns
    assert host.secret_in(host.backup) == secret
    code, out, err = host.state_cmd("check")
    assert code == 2
    assert out.startswith(f"{host.db}: ")
    assert f"{host.backup}: ok, taken " in out
    assert f"convergent state restore --state-dir {host.state}" in err


def test_restore_brings_back_the_same_password(host: Host) -> None:
    secret = host.target.read_text()
    _garbage_in_a_middle_page(host.db)
    assert host.run()[0] == 2
    code, out, err = host.state_cmd("restore")
    assert code == 0, err
    assert f"{host.db}: restored from {host.backup}" in out
    assert (host.state / "state.db.damaged").exists()  # kept for a post-mortem
    code, out, err = host.run()
    assert code == 0, err
    assert "password[db]" not in out  # not regenerated
    assert host.target.read_text() == secret
    assert host.state_cmd("check")[0] == 0


def test_restore_keeps_a_sound_database_unless_told(host: Host) -> None:
    before = host.db.read_bytes()
    code, _, err = host.state_cmd("restore")
    assert code == 2
    assert "is not damaged; restoring would lose what changed since the backup" in err
    assert "add --yes" in err
    assert host.db.read_bytes() == before
    code, _, err = host.state_cmd("restore", "--yes")
    assert code == 0, err


def test_reset_without_yes_refuses_and_with_yes_starts_afresh(host: Host) -> None:
    secret = host.target.read_text()
    before = host.db.read_bytes()
    code, out, err = host.state_cmd("reset")
    assert code == 2
    assert "losing 1 secret" in err and "--yes" in err and "nothing was changed" in err
    assert host.db.read_bytes() == before
    _empty(host.db)
    code, out, err = host.state_cmd("reset")
    assert code == 2
    assert "cannot be read" in err
    code, out, err = host.state_cmd("reset", "--yes")
    assert code == 0, err
    assert f"{host.state}: state started afresh; lost whatever its database held" in out
    code, out, err = host.run()
    assert code == 0, err
    assert "password[db]: generated" in out
    assert host.target.read_text() != secret


def test_restore_and_reset_are_refused_while_an_agent_runs(host: Host) -> None:
    with Agent("run", str(host.policy), "--state-dir", str(host.state)) as agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        for action in (("reset", "--yes"), ("restore", "--yes")):
            code, _, err = host.state_cmd(*action)
            assert code == 2
            assert f"is in use by another convergent (pid {agent.proc.pid}" in err
        code, out, err = host.state_cmd("check")  # only reads: beside the agent
        assert code == 0, err
        assert out.startswith(f"{host.db}: ok (schema 3; 1 secret")
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    assert host.secret_in(host.db) == host.target.read_text()
