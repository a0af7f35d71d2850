"""A partition heals without lost events: three agents, each in its own network
namespace (10.200.0.1-3, veth pairs to a bridge in a fourth namespace), each running an
etcd member (``--initial-cluster``, TLS). Host c's link is cut (``ip link set DEV
down``) while host a changes its key twice; once the link is up again, a watcher on c
(talking to c's member only) has seen both changes, in order, and c's agent has the last.

The test makes the namespaces and deletes them, after killing every process in them.
Skipped only when ``ip netns add`` is not permitted here.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.support import fast_etcd, needs_etcd, needs_tls
from tests.cluster.test_agents import BOUND, publisher, reader, wrote
from tests.e2e.agent import Agent

pytestmark = [needs_etcd, needs_tls, pytest.mark.slow, pytest.mark.timeout(180)]
__all__ = ["fast_etcd"]

HOSTS = {"a": "10.200.0.1", "b": "10.200.0.2", "c": "10.200.0.3"}


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=BOUND)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Net:
    """The namespaces of one test: ``ns[host]`` per host, ``hub`` with the bridge;
    ``link[host]`` is the hub's end of that host's veth (down cuts the host off)."""

    def __init__(self, tag: str, hosts: dict[str, str] | None = None) -> None:
        self.hosts = HOSTS if hosts is None else hosts  # name -> address (/24 unless given)
        self.hub = f"cvg{tag}hub"
        self.ns = {h: f"cvg{tag}{h}" for h in self.hosts}
        self.link = {h: f"cvg{tag}{h}" for h in self.hosts}
        self.made: list[str] = []

    def make(self) -> None:
        for ns in (self.hub, *self.ns.values()):
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for host, address in self.hosts.items():
            outer = self.link[host]
            _ip("-n", self.hub, "link", "add", outer, "type", "veth", "peer", "name", "eth0",
                "netns", self.ns[host])  # fmt: skip
            _ip("-n", self.hub, "link", "set", outer, "master", "br0", "up")
            cidr = address if "/" in address else f"{address}/24"
            _ip("-n", self.ns[host], "addr", "add", cidr, "dev", "eth0")
            _ip("-n", self.ns[host], "link", "set", "eth0", "up")

    def kill_all(self) -> None:
        """SIGKILL every process in our namespaces and wait (bounded) until none is left."""
        deadline = time.monotonic() + BOUND
        for ns in self.made:
            while time.monotonic() < deadline:
                pids = subprocess.run(
                    ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=BOUND
                ).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                _wait_gone([int(p) for p in pids], deadline)

    def delete(self) -> None:
        self.kill_all()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=BOUND)
        self.made.clear()


def _wait_gone(pids: list[int], deadline: float) -> None:
    import select

    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            continue
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)


@pytest.fixture
def net() -> Iterator[Net]:
    if os.geteuid() != 0:
        pytest.skip("ip netns add is not permitted: network namespaces need root")
    made = Net(f"{os.getpid() % 100000}")
    probe = subprocess.run(
        ["ip", "netns", "add", made.hub], capture_output=True, text=True, timeout=BOUND
    )
    if probe.returncode != 0:
        pytest.skip(f"ip netns add is not permitted here: {probe.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", made.hub], capture_output=True, timeout=BOUND)
    try:
        made.make()
        yield made
    finally:
        made.delete()


class NsAgent(Agent):
    """An :class:`Agent` (``convergent ARGS``) run inside network namespace ``ns``."""

    def __init__(self, ns: str, *args: str) -> None:
        super().__init__(*args, prefix=("ip", "netns", "exec", ns))


WATCHER = textwrap.dedent(
    """
    import asyncio, sys
    from convergent.world import keys
    from convergent.world.cluster import connect
    from convergent.world.tls import host_files

    async def main():
        endpoint, state, host, watched = sys.argv[1:5]
        client = connect([endpoint], host_files(state, host))  # no session: only reads
        client.retry_for = 60.0
        await client.watch(keys.kv_key(watched, "port"),
                           lambda key, value: print("event", value, flush=True))
        print("watching", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_a_partition_heals_without_lost_events(tmp_path: Path, net: Net, fast_etcd: None) -> None:
    urls = {h: (f"https://{ip}:2379", f"https://{ip}:2380") for h, ip in HOSTS.items()}
    initial = ",".join(f"{h}={urls[h][1]}" for h in HOSTS)
    states = {h: tmp_path / h for h in HOSTS}
    tokens = {}
    for host in "bc":
        made = subprocess.run(
            [sys.executable, "-m", "convergent", "cluster", "token", "--hostname", host,
             "--state-dir", str(states["a"]), "--client-urls", urls[host][0],
             "--peer-urls", urls[host][1]],
            capture_output=True, text=True, timeout=BOUND,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        tokens[host] = tmp_path / f"{host}.token"
        tokens[host].write_text(made.stdout)
        tokens[host].chmod(0o600)
    publisher(tmp_path / "a.yaml", "1")
    reader(tmp_path / "b.yaml", "a", tmp_path / "b-port")
    reader(tmp_path / "c.yaml", "a", tmp_path / "c-port")

    def command(host: str) -> list[str]:
        words = ["run", str(tmp_path / f"{host}.yaml"), "--hostname", host]
        words += ["--state-dir", str(states[host]), "--initial-cluster", initial]
        words += ["--client-urls", urls[host][0], "--peer-urls", urls[host][1]]
        if host in tokens:
            words += ["--join-token", str(tokens[host])]
        return words

    with contextlib.ExitStack() as stack:
        agent = {h: stack.enter_context(NsAgent(net.ns[h], *command(h))) for h in HOSTS}
        wrote(agent["b"], tmp_path / "b-port")
        wrote(agent["c"], tmp_path / "c-port")
        events: queue.Queue[str] = queue.Queue()
        watcher = subprocess.Popen(
            ["ip", "netns", "exec", net.ns["c"], sys.executable, "-c", WATCHER,
             urls["c"][0], str(states["c"]), "c", "a"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        stack.callback(watcher.wait, BOUND)
        stack.callback(watcher.kill)
        assert watcher.stdout is not None
        reading = threading.Thread(target=_lines, args=(watcher.stdout, events), daemon=True)
        reading.start()
        assert events.get(timeout=BOUND) == "watching"

        _ip("-n", net.hub, "link", "set", net.link["c"], "down")  # c is cut off
        for value in ("2", "3"):
            publisher(tmp_path / "a.yaml", value)
            wrote(agent["b"], tmp_path / "b-port")  # a and b: still a majority
            assert (tmp_path / "b-port").read_text() == value
        assert (tmp_path / "c-port").read_text() == "1"
        _ip("-n", net.hub, "link", "set", net.link["c"], "up")  # healed

        seen = [events.get(timeout=BOUND), events.get(timeout=BOUND)]
        assert seen == ["event 2", "event 3"]  # both, in order: none lost
        while (tmp_path / "c-port").read_text() != "3":
            wrote(agent["c"], tmp_path / "c-port")


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.rstrip("\n"))
