"""A running ``run --remote`` follows the local policy (saved: copied again, and the
remote agent swaps graphs), stops its agents on Ctrl-C; ``--detach`` leaves the agent
running on its own."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from tests.remote.support import Initiator, file_policy, wait_until
from tests.sshd_support import ClientKeys, Sshd, client_keys, free_port, needs_sshd

pytestmark = [needs_sshd, pytest.mark.timeout(90)]
__all__ = ["client_keys"]
BOUND = 30.0


@pytest.fixture
def sshd(tmp_path: Path, client_keys: ClientKeys) -> Sshd:
    server = Sshd(tmp_path / "sshd", "127.0.0.1", free_port(), [client_keys.public])
    server.start()
    yield server
    server.stop()


def _initiator(tmp_path: Path, key: Path, server: Sshd) -> Initiator:
    initiator = Initiator(tmp_path / "laptop", key)
    initiator.known_hosts.write_text(f"{server.known_hosts_line()}\n")
    return initiator


def test_saving_the_policy_reaches_the_remote_agent_and_ctrl_c_stops_it(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    made = tmp_path / "made"
    policy = file_policy(tmp_path / "site.yaml", "one", made)
    initiator = _initiator(tmp_path, client_keys.key, sshd)
    with initiator.start(str(policy), "--remote", f"{sshd.url}#web1") as run:
        run.wait_for_line(lambda line: line == f"[web1] file[{made}]: created", BOUND)
        assert made.read_text() == "one\n"
        file_policy(tmp_path / "site.yaml.new", "two", made).rename(policy)
        run.wait_for_line(lambda line: line.startswith("[web1] policy reloaded"), BOUND)
        run.wait_for_line(lambda line: line.startswith(f"[web1] file[{made}]: "), BOUND)
        assert made.read_text() == "two\n"
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(BOUND) == 0
    assert any("[web1] SIGTERM: stopping" in line for line in run.err + run.out)


def test_a_detached_agent_keeps_repairing_after_the_run_ends(
    tmp_path: Path, client_keys: ClientKeys, sshd: Sshd
) -> None:
    made = tmp_path / "made"
    policy = file_policy(tmp_path / "site.yaml", "kept", made)
    done = _initiator(tmp_path, client_keys.key, sshd).run(
        str(policy), "--remote", f"{sshd.url}#web1", "--detach"
    )
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "agent detached" in x]
    pid = int(line.rpartition("pid ")[2].rstrip(")"))
    try:
        log = sshd.home / "hosts" / "web1" / "agent.log"
        wait_until(log, lambda: "created" in (log.read_text() if log.exists() else ""))
        made.unlink()  # drift, after the run that started the agent has ended
        wait_until(made, made.exists)
        assert made.read_text() == "kept\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
