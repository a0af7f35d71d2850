"""Agents that run etcd themselves, on 127.0.0.1, TLS on: one --cluster agent and two
--seeds clients share a world; three --initial-cluster agents survive the loss of one.

Every agent is the real ``convergent run`` in its own process; every wait is for a line
it prints, with a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.support import fast_etcd, free_ports, needs_etcd, needs_tls
from tests.e2e.agent import Agent

pytestmark = [needs_etcd, needs_tls, pytest.mark.slow, pytest.mark.timeout(120)]
__all__ = ["fast_etcd"]

BOUND = 30.0
WATCHING = "converged; watching for changes"


def convergent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args], capture_output=True, text=True, timeout=BOUND
    )


def token(first_state: Path, host: str, into: Path, *options: str) -> Path:
    """A join token for ``host`` from the first host's CA, in a 0600 file."""
    made = convergent(
        "cluster", "token", "--hostname", host, "--state-dir", str(first_state), *options
    )
    assert made.returncode == 0, made.stderr
    path = into / f"{host}.token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(made.stdout)
    return path


def publisher(path: Path, port: str) -> None:
    path.write_text(f'resources:\n  - kv: port\n    value: "{port}"\n', encoding="utf-8")


def reader(path: Path, host: str, out: Path) -> None:
    """A policy that copies host ``host``'s kv ``port`` into the file ``out``."""
    path.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - kv: port-of-{host}
                key: port
                host: {host}
              - file: {out}
                recv: {{content: kv[port-of-{host}].value}}
            """
        ),
        encoding="utf-8",
    )


def wrote(agent: Agent, path: Path) -> None:
    """Wait until ``agent`` wrote ``path`` (created it or changed its content)."""
    agent.wait_for_line(
        lambda line: line.startswith(f"file[{path}]: ") and "not checked" not in line, BOUND
    )


@contextlib.contextmanager
def agents(*commands: list[str]) -> Iterator[list[Agent]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Agent(*command)) for command in commands]


def test_a_cluster_agent_and_two_seeded_agents_share_key_values(
    tmp_path: Path, fast_etcd: None
) -> None:
    client, peer = free_ports(2)
    url = f"https://127.0.0.1:{client}"
    a, b, c = (tmp_path / name for name in "abc")
    publisher(tmp_path / "a.yaml", "8080")
    reader(tmp_path / "b.yaml", "a", tmp_path / "b-port")
    reader(tmp_path / "c.yaml", "a", tmp_path / "c-port")
    # b's token before the cluster runs (a gives b its role at start), c's while it runs
    # (the token command gives c its role at once).
    tokens = {"b": token(a, "b", tmp_path)}
    first = ["run", str(tmp_path / "a.yaml"), "--hostname", "a", "--state-dir", str(a)]
    first += ["--cluster", "--client-urls", url, "--peer-urls", f"https://127.0.0.1:{peer}"]

    def seeded(host: str, state: Path) -> list[str]:
        return [
            "run",
            str(tmp_path / f"{host}.yaml"),
            "--hostname",
            host,
            "--state-dir",
            str(state),
            "--seeds",
            url,
            "--join-token",
            str(tokens[host]),
        ]

    with agents(first) as (agent_a,):
        agent_a.wait_for_line(lambda line: line == "kv[port]: set", BOUND)
        tokens["c"] = token(a, "c", tmp_path, "--endpoints", url)
        with agents(seeded("b", b), seeded("c", c)) as (agent_b, agent_c):
            wrote(agent_b, tmp_path / "b-port")
            wrote(agent_c, tmp_path / "c-port")
            assert (tmp_path / "b-port").read_text() == "8080"
            assert (tmp_path / "c-port").read_text() == "8080"
            # A change on a reaches both, live.
            publisher(tmp_path / "a.yaml", "9090")
            wrote(agent_b, tmp_path / "b-port")
            wrote(agent_c, tmp_path / "c-port")
            assert (tmp_path / "b-port").read_text() == "9090"
            assert (tmp_path / "c-port").read_text() == "9090"
            status = convergent(
                "cluster", "status", "--json", "--state-dir", str(a), "--hostname", "a",
                "--endpoints", url,
            )  # fmt: skip
            report = json.loads(status.stdout)
            assert report["leader"] == "a"
            assert [agent["host"] for agent in report["agents"]] == ["a", "b", "c"]
            # Each has published its converged key (0 or 1) since its first graph.
            assert all(agent["converged"] is not None for agent in report["agents"]), report
            asyncio.run(_only_its_own_prefix(url, b, "b", "a"))
            # Any host of the cluster may look (b: a client, not the administrator).
            seen = convergent(
                "cluster", "status", "--json", "--state-dir", str(b), "--hostname", "b",
                "--endpoints", url,
            )  # fmt: skip
            assert seen.returncode == 0, seen.stderr
            assert json.loads(seen.stdout)["leader"] == "a"
        # Only a's member ever ran: b and c are clients.
        assert not (b / "etcd").exists() and not (c / "etcd").exists()


def test_three_members_lose_one_agent_and_the_others_go_on(tmp_path: Path, fast_etcd: None) -> None:
    ports = free_ports(6)
    clients = {h: f"https://127.0.0.1:{ports[i]}" for i, h in enumerate("abc")}
    peers = {h: f"https://127.0.0.1:{ports[3 + i]}" for i, h in enumerate("abc")}
    initial = ",".join(f"{h}={peers[h]}" for h in "abc")
    states = {h: tmp_path / h for h in "abc"}
    tokens = {h: token(states["a"], h, tmp_path) for h in "bc"}
    publisher(tmp_path / "a.yaml", "1")
    reader(tmp_path / "b.yaml", "a", tmp_path / "b-port")
    reader(tmp_path / "c.yaml", "a", tmp_path / "c-port")

    def command(host: str) -> list[str]:
        words = ["run", str(tmp_path / f"{host}.yaml"), "--hostname", host]
        words += ["--state-dir", str(states[host]), "--initial-cluster", initial]
        words += ["--client-urls", clients[host], "--peer-urls", peers[host]]
        if host in tokens:
            words += ["--join-token", str(tokens[host])]
        return words

    with agents(command("a"), command("b"), command("c")) as (agent_a, agent_b, agent_c):
        wrote(agent_b, tmp_path / "b-port")
        wrote(agent_c, tmp_path / "c-port")
        member_c = _member_pid(states["c"])
        agent_c.send(signal.SIGKILL)
        agent_c.wait(BOUND)
        _gone(member_c)  # the member died with its agent
        # The world is still writable (a's change) and b still gets the events.
        for value in ("2", "3"):
            publisher(tmp_path / "a.yaml", value)
            wrote(agent_b, tmp_path / "b-port")
            assert (tmp_path / "b-port").read_text() == value
        assert agent_a.proc.poll() is None and agent_b.proc.poll() is None


async def _only_its_own_prefix(url: str, state: Path, host: str, other: str) -> None:
    """With b's certificate, b's keys can be written, a's only read (etcd's RBAC); the
    same for the converged keys."""
    from convergent.world import keys
    from convergent.world.base import WorldError
    from convergent.world.cluster import connect
    from convergent.world.tls import host_files

    client = connect([url], host_files(str(state), host))
    try:
        await client.set(keys.kv_key(host, "mine"), "1")
        assert await client.get(keys.kv_key(other, "port")) == "9090"
        with pytest.raises(WorldError, match="permission denied"):
            await client.set(keys.kv_key(other, "port"), "6666")
        assert await client.get(keys.kv_key(other, "port")) == "9090"
        # Its converged key (apart from its prefix) is its own too; another's is not.
        mine = keys.converged_key(host)
        await client.set(mine, await client.get(mine) or "0")  # as b's agent has it
        with pytest.raises(WorldError, match="permission denied"):
            await client.set(keys.converged_key(other), "0")
        with pytest.raises(WorldError, match="permission denied"):
            await client.set(keys.converged_key(host) + "x", "0")
    finally:
        await client.aclose()


def _member_pid(state: Path) -> int:
    (record,) = os.listdir(state / "children")
    return int(record.split("-")[0])


def _gone(pid: int) -> None:
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], BOUND)
    finally:
        os.close(pidfd)
    assert ready, f"etcd member {pid} outlived its agent"


def test_an_agent_uses_a_cluster_someone_else_runs_and_starts_no_member(
    tmp_path: Path, fast_etcd: None
) -> None:
    from tests.cluster.members import member_process

    client, peer = free_ports(2)
    publisher(tmp_path / "b.yaml", "7070")
    with member_process(tmp_path / "ops", "ops", client, peer) as member:
        joined = token(tmp_path / "ops", "b", tmp_path)
        command = ["run", str(tmp_path / "b.yaml"), "--hostname", "b"]
        command += ["--state-dir", str(tmp_path / "b"), "--etcd-endpoints", member.client_url]
        command += ["--join-token", str(joined), "--converged-timeout", "0"]
        done = convergent(*command)
        assert done.returncode == 0, done.stderr
        assert "kv[port]: set" in done.stdout
        status = convergent(
            "cluster", "status", "--json", "--state-dir", str(tmp_path / "b"), "--hostname", "b",
            "--endpoints", member.client_url,
        )  # fmt: skip
        assert [m["name"] for m in json.loads(status.stdout)["members"]] == ["ops"]
    assert not (tmp_path / "b" / "etcd").exists()
