"""A real OpenSSH server for the remote tests: on 127.0.0.1, and inside network
namespaces acting as hosts.

- :class:`Sshd`: ``/usr/sbin/sshd -D -e -f CONFIG`` with its own host key, port,
  ``AuthorizedKeysFile``, ``UsePAM no``; started, waited for (its "Server listening"
  line, bounded) and stopped by its PID. ``env`` goes into the sessions through
  ``SetEnv`` (``CONVERGENT_REMOTE_DIR``: where the host keeps convergent's files, so that
  namespace hosts sharing one file system keep apart; ``PATH``: what the host has).
- :func:`client_keys`: the client's key pair (and a second one no server accepts),
  generated once per test session with ``ssh-keygen``.
- :class:`SshLab`: namespaces on a bridge (``tests/cluster/test_partition.py``'s
  :class:`Net`, addresses in 10.200.1.0/25), this namespace joined to the bridge as
  10.200.1.126, an sshd in each namespace; a host behind another (``behind``) sits on a
  veth pair of its own in 10.200.1.128/25 and is reachable only through that host.
  Everything it started is killed by PID and every namespace deleted on :meth:`close`.
- :func:`ssh_agent`: a real ``ssh-agent -D`` holding given keys (what a user of
  ``--remote-depth 2`` runs), killed by its PID at the end.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.test_partition import Net, _ip

__all__ = [
    "LAB_ADDRESS",
    "SSHD",
    "ClientKeys",
    "SshLab",
    "Sshd",
    "client_keys",
    "known_hosts",
    "needs_sshd",
    "ssh_agent",
    "ssh_lab",
]

SSHD = "/usr/sbin/sshd"
BOUND = 20.0  # seconds an sshd may take to listen, or to die
LAB_ADDRESS = "10.200.1.126"  # this namespace's address on the lab's bridge

needs_sshd = pytest.mark.skipif(
    not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None,
    reason="OpenSSH's server is not installed: apt-get install openssh-server",
)


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key at ``path`` (no passphrase); its public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=BOUND,
    )
    return Path(f"{path}.pub").read_text().strip()


@dataclass(frozen=True)
class ClientKeys:
    """``key``: the client's private key, accepted by every lab sshd; ``wrong``: another."""

    key: Path
    public: str
    wrong: Path


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> ClientKeys:
    where = tmp_path_factory.mktemp("client-keys")
    public = keygen(where / "id_ed25519", "convergent-test-client")
    keygen(where / "wrong_ed25519", "convergent-test-stranger")
    return ClientKeys(where / "id_ed25519", public, where / "wrong_ed25519")


@dataclass
class Sshd:
    """One sshd: its files under ``where``, listening on ``address``:``port`` inside
    namespace ``ns`` (None: this one)."""

    where: Path
    address: str
    port: int
    authorized: list[str]
    ns: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.where.mkdir(parents=True, exist_ok=True)
        self.host_key = self.where / "host_ed25519"
        self.host_public = keygen(self.host_key, "convergent-test-host")
        self.home = self.where / "home"
        self.env.setdefault("CONVERGENT_REMOTE_DIR", str(self.home))
        self.env.setdefault("HOME", str(self.home))  # not root's: its shell rc stays out
        (self.where / "authorized_keys").write_text("".join(f"{k}\n" for k in self.authorized))
        settings = [
            f"Port {self.port}",
            f"ListenAddress {self.address}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.where / 'authorized_keys'}",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PidFile none",
            "AllowTcpForwarding yes",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in sorted(self.env.items())),
        ]
        self.config = self.where / "sshd_config"
        self.config.write_text("".join(f"{line}\n" for line in settings))

    @property
    def url(self) -> str:
        return f"ssh://root@{self.address}:{self.port}"

    def known_hosts_line(self) -> str:
        where = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{where} {self.host_public}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start it and return once it listens (bounded)."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        self.proc = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + BOUND
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"sshd did not listen within {BOUND} s: {self.log}") from None
            if line is None:
                raise RuntimeError(f"sshd exited: {self.log}")
            if "Server listening on" in line:
                return

    def stop(self) -> None:
        """SIGKILL its process group (the listener and the sessions it forked) by its
        PID, then reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(BOUND)
        self.proc = None


def known_hosts(path: Path, servers: list[Sshd]) -> Path:
    path.write_text("".join(f"{s.known_hosts_line()}\n" for s in servers))
    return path


def free_port() -> int:
    from tests.etcd_support import free_ports

    return free_ports(1)[0]


class SshLab:
    """Hosts ``names`` (a, b, c...) at 10.200.1.1, .2, ... on a bridge, each with an
    sshd on port 22; ``behind``: {host: via} puts ``host`` behind ``via`` (10.200.1.130,
    reachable from ``via`` at 10.200.1.129 only)."""

    def __init__(
        self,
        where: Path,
        keys: ClientKeys,
        names: tuple[str, ...],
        behind: dict[str, str] | None = None,
    ) -> None:
        self.where = where
        self.keys = keys
        self.behind = dict(behind or {})
        front = [n for n in names if n not in self.behind]
        self.address = {n: f"10.200.1.{i + 1}" for i, n in enumerate(front)}
        self.net = Net(f"r{os.getpid() % 10000}", {n: f"{self.address[n]}/25" for n in front})
        self.sshd: dict[str, Sshd] = {}
        self.ns = dict(self.net.ns)
        self.uplink = f"{self.net.hub[:-3]}up"
        for host, via in self.behind.items():
            self.address[host] = "10.200.1.130"
            self.ns[host] = f"{self.net.hub[:-3]}{host}"
            assert via in front

    def make(self) -> None:
        self.net.make()
        _ip("link", "add", self.uplink, "type", "veth", "peer", "name", "up0",
            "netns", self.net.hub)  # fmt: skip
        _ip("-n", self.net.hub, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{LAB_ADDRESS}/25", "dev", self.uplink)
        _ip("link", "set", self.uplink, "up")
        for host, via in self.behind.items():
            ns = self.ns[host]
            _ip("netns", "add", ns)
            self.net.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "deep0",
                "netns", self.ns[via])  # fmt: skip
            _ip("-n", ns, "addr", "add", "10.200.1.130/25", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.ns[via], "addr", "add", "10.200.1.129/25", "dev", "deep0")
            _ip("-n", self.ns[via], "link", "set", "deep0", "up")
        for host, address in self.address.items():
            server = Sshd(self.where / host, address, 22, [self.keys.public], self.ns[host])
            self.sshd[host] = server
            server.start()

    def link_down(self, host: str) -> None:
        """Cut ``host`` off the bridge."""
        _ip("-n", self.net.hub, "link", "set", self.net.link[host], "down")

    def link_up(self, host: str) -> None:
        _ip("-n", self.net.hub, "link", "set", self.net.link[host], "up")

    def bytes_to(self, host: str) -> int:
        """Bytes the bridge has sent to ``host`` so far (its veth's counters)."""
        import json

        done = subprocess.run(
            ["ip", "-n", self.net.hub, "-j", "-s", "link", "show", self.net.link[host]],
            capture_output=True, text=True, timeout=BOUND, check=True,
        )  # fmt: skip
        return int(json.loads(done.stdout)[0]["stats64"]["tx"]["bytes"])

    def known_hosts(self, path: Path) -> Path:
        return known_hosts(path, list(self.sshd.values()))

    def close(self) -> None:
        for server in self.sshd.values():
            server.stop()
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", self.uplink)
        self.net.delete()


@contextlib.contextmanager
def ssh_lab(
    where: Path, keys: ClientKeys, names: tuple[str, ...], behind: dict[str, str] | None = None
) -> Iterator[SshLab]:
    """An :class:`SshLab`, made and closed; skips where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    lab = SshLab(where, keys, names, behind)
    try:
        lab.make()
    except RuntimeError as exc:
        lab.close()
        if "netns add" in str(exc) or "Operation not permitted" in str(exc):
            pytest.skip(f"ip netns add is not permitted here: {exc}")
        raise
    try:
        yield lab
    finally:
        lab.close()


@contextlib.contextmanager
def ssh_agent(where: Path, *keys: Path) -> Iterator[str]:
    """``ssh-agent -D`` listening on a socket under ``where``, holding ``keys``; yields
    the socket's path (a user's ``$SSH_AUTH_SOCK``). Killed by its PID at the end."""
    sock = where / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        out = proc.stdout
        threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
        first = lines.get(timeout=BOUND)  # printed once the socket listens
        assert first.startswith(f"SSH_AUTH_SOCK={sock};"), first
        for key in keys:
            subprocess.run(
                ["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                check=True, capture_output=True, timeout=BOUND,
            )  # fmt: skip
        yield str(sock)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
