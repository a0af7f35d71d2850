"""Test etcd members on 127.0.0.1: start one or a 3-member cluster, kill them by PID.

Debian's ``etcd-server`` (``make test`` installs it); a test that needs one and finds no
``etcd`` on PATH is skipped with :func:`require_etcd`. Every member:

- listens on free 127.0.0.1 ports (picked by binding port 0; a start that loses the
  race for a port is retried with new ones, at most three times),
- keeps its data under a directory the test gives (its ``tmp_path``),
- runs with ``--heartbeat-interval=10 --election-timeout=100`` (it starts in ~0.06 s),
- is ready when it logs "ready to serve client requests" (read from its output by a
  thread, which also keeps its log in ``member.log``), waited for with a bound,
- is stopped with SIGKILL by its PID (:meth:`EtcdMember.kill`), never by name.

Use::

    with etcd_member(tmp_path) as member:          # one member
        member.endpoint                              # "http://127.0.0.1:PORT"
    with etcd_cluster(tmp_path, 3) as cluster:     # three members, one cluster
        cluster.endpoints                            # ["http://127.0.0.1:P1", ...]
        cluster.members[0].kill()                    # kill -9 that member

``extra_args`` passes more flags to every member (TLS: ``--cert-file`` ...; then give
``scheme="https"`` so the URLs say so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

__all__ = [
    "START_BOUND",
    "EtcdCluster",
    "EtcdMember",
    "compact",
    "etcd_cluster",
    "etcd_member",
    "etcdctl",
    "free_ports",
    "make_pki",
    "openssl_ca",
    "openssl_cert",
    "require_etcd",
    "tls_member_args",
    "wipe",
]

START_BOUND = 20.0  # seconds a member (or a whole cluster) may take to be ready
_READY = "ready to serve client requests"
_PORT_IN_USE = "address already in use"
_TRIES = 3
FAST = ("--heartbeat-interval=10", "--election-timeout=100")


def require_etcd() -> str:
    """The path of ``etcd``; skips the test when it is not installed."""
    path = shutil.which("etcd")
    if path is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server; make test)")
    return path


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def etcdctl(endpoint: str, *args: str) -> str:
    """``etcdctl --endpoints=ENDPOINT ARGS...`` (v3 API, bounded); its output."""
    path = shutil.which("etcdctl")
    if path is None:
        pytest.skip("etcdctl is not installed (Debian: apt-get install etcd-client)")
    done = subprocess.run(
        [path, f"--endpoints={endpoint}", *args],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        check=True,
        timeout=START_BOUND,
    )
    return done.stdout


def wipe(endpoint: str) -> None:
    """Delete every key of the cluster at ``endpoint``."""
    etcdctl(endpoint, "del", "", "--from-key")


def compact(endpoint: str) -> int:
    """Compact the cluster's history up to its current revision; that revision."""
    revision = int(json.loads(etcdctl(endpoint, "get", "/", "-w", "json"))["header"]["revision"])
    etcdctl(endpoint, "compact", str(revision))
    return revision


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=START_BOUND
    )


def openssl_ca(where: Path, name: str) -> None:
    """A self-signed CA: ``where/NAME.pem`` and ``NAME.key``."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
        "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip


def openssl_cert(where: Path, name: str, ca: str, usage: str) -> None:
    """A certificate for 127.0.0.1 with CN ``name``, signed by ``ca``: ``NAME.pem``/``.key``."""
    ext = where / f"{name}.ext"
    ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", str(ext),
        cwd=where,
    )  # fmt: skip


def make_pki(where: Path, clients: Sequence[str]) -> Path:
    """In ``where`` (made private): ``ca``, ``member`` (server and peer) and one client
    certificate per name in ``clients`` (its CN: the name). Skips without openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where.chmod(0o700)
    openssl_ca(where, "ca")
    openssl_cert(where, "member", "ca", "serverAuth,clientAuth")
    for name in clients:
        openssl_cert(where, name, "ca", "clientAuth")
    return where


def tls_member_args(pki: Path) -> list[str]:
    """etcd flags for mutual TLS on client and peer URLs with ``make_pki``'s files."""
    return [
        f"--cert-file={pki / 'member.pem'}",
        f"--key-file={pki / 'member.key'}",
        f"--trusted-ca-file={pki / 'ca.pem'}",
        "--client-cert-auth",
        f"--peer-cert-file={pki / 'member.pem'}",
        f"--peer-key-file={pki / 'member.key'}",
        f"--peer-trusted-ca-file={pki / 'ca.pem'}",
        "--peer-client-cert-auth",
    ]


class EtcdMember:
    """One etcd process; ``endpoint`` is its client URL."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_port: int,
        peer_port: int,
        *,
        scheme: str = "http",
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.scheme = scheme
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._ended = threading.Event()
        self._settled = threading.Event()  # ready, or ended
        self._reader: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"etcd member {self.name} was never started"
        return self.process.pid

    def start(self, initial_cluster: str, *, state: str, token: str, extra: Sequence[str]) -> None:
        """Start the process (``state``: "new" or "existing"); :meth:`wait_ready` waits."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._ready.clear()
        self._ended.clear()
        self._settled.clear()
        self.log = []
        argv = [
            require_etcd(),
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={token}",
            *FAST,
            *extra,
        ]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.append(line)
            if _READY in line:
                self._ready.set()
                self._settled.set()
        self._ended.set()
        self._settled.set()

    def wait_ready(self, bound: float = START_BOUND) -> None:
        """Until the member serves clients; AssertionError with its log after ``bound``
        seconds, or as soon as it exits."""
        self._settled.wait(bound)
        if not self._ready.is_set():
            tail = "\n".join(self.log[-15:])
            raise AssertionError(f"etcd member {self.name} did not start:\n{tail}")

    @property
    def port_lost(self) -> bool:
        """Whether the member exited because a port was taken meanwhile."""
        return self._ended.is_set() and any(_PORT_IN_USE in line for line in self.log)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID, and reap it (bounded)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)


class EtcdCluster:
    """Members of one etcd cluster."""

    def __init__(self, members: list[EtcdMember], token: str, extra: Sequence[str]) -> None:
        self.members = members
        self.token = token
        self.extra = tuple(extra)

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def restart(self, member: EtcdMember) -> None:
        """Start a killed member again on its ports and data (it rejoins the cluster)."""
        member.kill()
        member.start(self.initial_cluster, state="existing", token=self.token, extra=self.extra)
        member.wait_ready()

    def restart_all(self) -> None:
        """Start every killed member again (together: each needs a quorum to be ready)."""
        for member in self.members:
            member.kill()
            member.start(self.initial_cluster, state="existing", token=self.token, extra=self.extra)
        for member in self.members:
            member.wait_ready()

    def wait_published(self, endpoint: str, bound: float = START_BOUND) -> None:
        """Until the member at ``endpoint`` lists every member with its client URLs: a
        member is ready before the others' publications (name, client URLs, through
        raft) are applied on every member. Each look is one ``etcdctl member list``
        (no timer between them); AssertionError with the last list after ``bound``."""
        deadline = time.monotonic() + bound
        while True:
            listed = json.loads(etcdctl(endpoint, "member", "list", "-w", "json"))
            urls = {url for m in listed.get("members", []) for url in m.get("clientURLs", [])}
            if set(self.endpoints) <= urls:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{endpoint} lists {sorted(urls)}, not {self.endpoints}")

    def kill_all(self) -> None:
        for member in self.members:
            member.kill()


def _start(base: Path, size: int, scheme: str, extra: Sequence[str]) -> EtcdCluster:
    for attempt in range(_TRIES):
        ports = free_ports(2 * size)
        token = f"convergent-test-{os.getpid()}-{ports[0]}"
        members = [
            EtcdMember(
                f"m{i}",
                base / f"etcd-{attempt}-m{i}",
                ports[2 * i],
                ports[2 * i + 1],
                scheme=scheme,
            )
            for i in range(size)
        ]
        cluster = EtcdCluster(members, token, extra)
        for member in members:
            member.start(cluster.initial_cluster, state="new", token=token, extra=extra)
        try:
            for member in members:
                member.wait_ready()
        except AssertionError:
            cluster.kill_all()
            if attempt + 1 < _TRIES and any(m.port_lost for m in members):
                continue
            raise
        return cluster
    raise AssertionError("unreachable")


@contextlib.contextmanager
def etcd_cluster(
    base: Path, size: int = 3, *, scheme: str = "http", extra_args: Sequence[str] = ()
) -> Iterator[EtcdCluster]:
    """A fresh cluster of ``size`` members with data under ``base``; all killed after."""
    cluster = _start(base, size, scheme, extra_args)
    try:
        yield cluster
    finally:
        cluster.kill_all()


@contextlib.contextmanager
def etcd_member(
    base: Path, *, scheme: str = "http", extra_args: Sequence[str] = ()
) -> Iterator[EtcdMember]:
    """One fresh single-member cluster with data under ``base``; killed after."""
    with etcd_cluster(base, 1, scheme=scheme, extra_args=extra_args) as cluster:
        yield cluster.members[0]
