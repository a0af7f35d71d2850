"""The world through the tunnel: two remote agents, each reaching the initiator's etcd
member only through its own SSH connection (``ssh -R``), trade exported files as
cluster members would; mgmt graphs that name their host with ``remote:`` go to it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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


INTRUDER = """
import socket, ssl, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
print("connected", flush=True)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    tls = context.wrap_socket(sock)
    body = b'{"key": "L2NvbnZlcmdlbnQv", "range_end": "L2NvbnZlcmdlbnQw"}'
    tls.sendall(b"POST /v3/kv/range HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                % (len(body), body))
    print("answered:", tls.recv(65536))
except (ssl.SSLError, OSError) as exc:
    print("refused:", exc)
"""


def _agent_port(home: Path) -> int:
    """The world port the running agent whose directory is ``home`` was given (its
    command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if b"--etcd-endpoints" in argv and cwd == home.resolve():
            url = argv[argv.index(b"--etcd-endpoints") + 1].decode()
            return int(url.rpartition(":")[2])
    raise AssertionError(f"no agent in {home} with a world port")


def test_another_user_of_a_host_reaches_the_forward_but_not_the_world(
    tmp_path: Path, client_keys: ClientKeys
) -> None:
    """A hostile user of host a (uid 65534, in a forked child) connects to the port the
    run forwarded there: etcd wants a certificate of the run's CA, so nothing is read."""
    if os.geteuid() != 0 or shutil.which("etcdctl") is None:
        pytest.skip("needs root (to become uid 65534) and etcdctl (apt-get install etcd-client)")
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
        with initiator.start(*map(str, graphs)) as run:
            run.wait_for_line(lambda line: line == "[a] file[shared-b]: created", 60)
            port = _agent_port(servers["a"].home / "hosts" / "a")
            tried = subprocess.run(
                ["/usr/bin/python3", "-I", "-c", INTRUDER, str(port)],
                capture_output=True, text=True, timeout=30, user=65534, group=65534,
            )  # fmt: skip
            run.proc.send_signal(signal.SIGINT)
            assert run.proc.wait(30) == 0
    finally:
        for server in servers.values():
            server.stop()
    assert tried.stdout.startswith("connected\n"), tried.stdout + tried.stderr
    assert "refused: " in tried.stdout and "CERTIFICATE" in tried.stdout.upper(), tried.stdout
    assert "/convergent/" not in tried.stdout
