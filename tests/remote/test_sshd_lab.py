"""The lab itself: a real sshd on 127.0.0.1 and in network namespaces lets the client's
key in (and no other), and gives the session its environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.sshd_support import (
    ClientKeys,
    Sshd,
    client_keys,
    free_port,
    known_hosts,
    needs_sshd,
    ssh_lab,
)

pytestmark = [needs_sshd, pytest.mark.timeout(60)]
__all__ = ["client_keys"]


def _ssh(key: Path, hosts: Path, server: Sshd, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={hosts}", "-o", "StrictHostKeyChecking=yes",
         "-p", str(server.port), f"root@{server.address}", command],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def test_the_loopback_sshd_lets_the_client_key_in_and_no_other(
    tmp_path: Path, client_keys: ClientKeys
) -> None:
    server = Sshd(tmp_path / "sshd", "127.0.0.1", free_port(), [client_keys.public])
    server.start()
    try:
        hosts = known_hosts(tmp_path / "known_hosts", [server])
        done = _ssh(client_keys.key, hosts, server, "echo $CONVERGENT_REMOTE_DIR")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(server.home)
        refused = _ssh(client_keys.wrong, hosts, server, "true")
        assert refused.returncode == 255
        assert "Permission denied" in refused.stderr
    finally:
        server.stop()


@pytest.mark.slow
def test_namespace_hosts_answer_on_their_own_addresses(
    tmp_path: Path, client_keys: ClientKeys
) -> None:
    with ssh_lab(tmp_path, client_keys, ("a", "b")) as lab:
        hosts = lab.known_hosts(tmp_path / "known_hosts")
        for name in ("a", "b"):
            done = _ssh(client_keys.key, hosts, lab.sshd[name], "ip -4 -o addr show eth0")
            assert done.returncode == 0, done.stderr
            assert f"{lab.address[name]}/25" in done.stdout
