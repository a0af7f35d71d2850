"""The world through the tunnel: two remote agents, each reaching the initiator's etcd
member only through its own SSH connection (``ssh -R``), trade exported files as
cluster members would; mgmt graphs that name their host with ``remote:`` go to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote.support import Initiator
from tests.sshd_support import ClientKeys, Sshd, client_keys, free_port, known_hosts, needs_sshd

pytestmark = [needs_sshd, pytest.mark.timeout(120), pytest.mark.slow]
__all__ = ["client_keys", "mgmt_graph"]


def mgmt_graph(path: Path, host: str, url: str, root: Path) -> Path:
    """Host ``host``'s mgmt graph: one file of its own, one exported (``@@``), and every
    host's exports collected into ROOT/HOST/."""
    path.write_text(
        f"""graph: trade
remote: {url}#{host}
resources:
  file:
  - name: own-{host}
    path: "{root}/{host}/own-{host}"
    content: "kept by {host}\\n"
  - name: "@@shared-{host}"
    path: "{root}/{host}/shared-{host}"
    content: "shared by {host}\\n"
collect:
- kind: file
  pattern: "{root}/{host}/"
edges: []
"""
    )
    return path


def test_two_remote_hosts_trade_exports_through_their_tunnels(
    tmp_path: Path, client_keys: ClientKeys
) -> None:
    servers = {
        h: Sshd(tmp_path / f"sshd-{h}", "127.0.0.1", free_port(), [client_keys.public])
        for h in "ab"
    }
    for server in servers.values():
        server.start()
    try:
        initiator = Initiator(tmp_path / "laptop", client_keys.key)
        known_hosts(initiator.known_hosts, list(servers.values()))
        root = tmp_path / "hosts"
        for host in servers:
            (root / host).mkdir(parents=True)
        graphs = [mgmt_graph(tmp_path / f"{h}.yaml", h, s.url, root) for h, s in servers.items()]
        done = initiator.run(*map(str, graphs), "--converged-timeout", "1")
    finally:
        for server in servers.values():
            server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "convergent-join-1:" not in done.stdout + done.stderr  # no token in the output
    for me, other in ("ab", "ba"):
        assert (root / me / f"own-{me}").read_text() == f"kept by {me}\n"
        assert (root / me / f"shared-{other}").read_text() == f"shared by {other}\n"
        assert f"[{me}] bootstrap:" in done.stdout
    for server in servers.values():  # each host had only its own graph, without remote:
        (graph,) = (server.home / "hosts").glob("*/policy/*.yaml")
        assert "\n#remote: ssh://" in graph.read_text()
