"""Agents as real processes sharing a world: the exchanges end with 24 files and every
agent converged; a killed agent's exports leave the others after its lease; an agent
waits for every live agent before it ends, and stops waiting for a dead one.

(The exchanges run without --converged-timeout: an agent that converged alone before
the others joined would end early; ending together is the last test's subject.)"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, convergent
from tests.etcd_support import etcd_member, require_etcd
from tests.exchange.test_hosts import EXAMPLES

DATA = Path(__file__).resolve().parent / "data"
LEASE = 10.0  # the agents' session TTL (seconds): a dead agent's keys are gone by then
BOUND = 20.0  # a whole exchange on this shared machine


@pytest.fixture(autouse=True)
def _fast_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    require_etcd()
    monkeypatch.setenv("CONVERGENT_ETCD_TIMING", "10,100")


def _tls() -> None:
    pytest.importorskip("cryptography", reason="the cluster's TLS needs cryptography")


def _ports(count: int) -> list[int]:
    from tests.etcd_support import free_ports

    return free_ports(count)


def _policies(tmp_path: Path, sources: dict[str, str]) -> dict[str, Path]:
    out = {}
    for host, text in sources.items():
        out[host] = tmp_path / f"{host}.yaml"
        out[host].write_text(text)
    return out


def _exchange(tmp_path: Path, policies: dict[str, Path], *extra: str) -> Iterator[Agent]:
    """Agent a runs the cluster's member (TLS), b and c join it through its seed. Their
    tokens are made first (with a's CA): a gives each its role in etcd when it starts."""
    client, peer = _ports(2)
    seed = f"https://127.0.0.1:{client}"
    for host in ("b", "c"):
        token = convergent(
            "cluster", "token", "--hostname", host, "--state-dir", str(tmp_path / "sa")
        )
        assert token.returncode == 0, token.stderr
        (tmp_path / f"token-{host}").write_text(token.stdout)
    first = Agent(
        "run", str(policies["a"]), "--hostname", "a", "--state-dir", str(tmp_path / "sa"),
        "--cluster", "--client-urls", seed, "--peer-urls", f"https://127.0.0.1:{peer}", *extra,
    )  # fmt: skip
    yield first
    first.wait_for_line(lambda line: line.startswith("file["), BOUND)
    for host in ("b", "c"):
        yield Agent(
            "run", str(policies[host]), "--hostname", host,
            "--state-dir", str(tmp_path / f"s{host}"), "--seeds", seed,
            "--join-token", str(tmp_path / f"token-{host}"), *extra,
        )  # fmt: skip


def _count(root: Path, dirs: tuple[str, ...]) -> dict[str, list[str]]:
    return {d: sorted(p.name for p in (root / d).iterdir()) for d in dirs if (root / d).is_dir()}


def _converged_with(agents: list[Agent], names: list[set[str]]) -> None:
    """Each agent created its files (any order), then said it is converged; then each
    is stopped (SIGTERM) and ends with 0."""
    for agent, wanted in zip(agents, names, strict=True):
        _lines(agent, {f"file[{name}]: created" for name in wanted})
        agent.wait_for_line(lambda line: line.startswith("converged"), BOUND)
    for agent in agents:
        agent.send(signal.SIGTERM)
    codes = [agent.wait(BOUND) for agent in agents]
    assert codes == [0, 0, 0], [agent.err for agent in agents]


def test_the_mgmt_exchange_of_3_agents_ends_with_24_files_and_every_agent_converged(
    tmp_path: Path,
) -> None:
    _tls()
    root = tmp_path / "trade"
    for h in "abc":  # as with mgmt, a file's directory exists first (mgmt makes no parents)
        (root / h).mkdir(parents=True)
    sources = {h: (DATA / f"trade_{h}.yaml").read_text().replace("ROOT", str(root)) for h in "abc"}
    policies = _policies(tmp_path, sources)
    shared = sorted(f"shared{i}-{h}" for i in (1, 2) for h in "abc")
    agents: list[Agent] = []
    try:
        agents.extend(_exchange(tmp_path, policies))
        _converged_with(agents, [{f"own1-{h}", f"own2-{h}", *shared} for h in "abc"])
    finally:
        for agent in agents:
            agent.__exit__(None, None, None)
    found = _count(root, ("a", "b", "c"))
    assert sum(len(names) for names in found.values()) == 24, found
    for host in "abc":
        assert found[host] == sorted([f"own1-{host}", f"own2-{host}", *shared])
    assert (root / "c" / "shared2-a").read_text() == "also shared by a\n"


def test_the_native_exchange_example_ends_with_24_files_and_every_agent_converged(
    tmp_path: Path,
) -> None:
    _tls()
    sources = {
        h: (EXAMPLES / f"{h}.yaml").read_text().replace("/tmp/exchange", f"{tmp_path}/x")
        for h in "abc"
    }
    policies = _policies(tmp_path, sources)
    exported = {f"f{i}{h}" for i in (3, 4) for h in "abc"}
    agents: list[Agent] = []
    try:
        agents.extend(_exchange(tmp_path, policies))
        _converged_with(agents, [exported for _ in "abc"])
    finally:
        for agent in agents:
            agent.__exit__(None, None, None)
    found = _count(tmp_path, ("xA", "xB", "xC"))
    assert sum(len(names) for names in found.values()) == 24, found


def _lines(agent: Agent, wanted: set[str], bound: float = BOUND) -> None:
    """Wait for every line of ``wanted`` (by its start), in any order (a line printed
    before counts too)."""
    left = {w for w in wanted if not any(line.startswith(w) for line in agent.out)}
    while left:
        now = frozenset(left)
        line = agent.wait_for_line(lambda t, now=now: any(t.startswith(w) for w in now), bound)
        left = {w for w in left if not line.startswith(w)}


def _plain(endpoint: str, tmp_path: Path, host: str, policy: Path, *extra: str) -> Agent:
    return Agent(
        "run", str(policy), "--hostname", host, "--state-dir", str(tmp_path / f"s{host}"),
        "--etcd-endpoints", endpoint, "--insecure", *extra,
    )  # fmt: skip


def test_killing_one_agent_removes_its_exports_after_the_lease(tmp_path: Path) -> None:
    sources = {
        h: (EXAMPLES / f"{h}.yaml")
        .read_text()
        .replace("/tmp/exchange", f"{tmp_path}/x")
        .replace("{export: true}", "{export: true, reverse: true}")
        for h in "abc"
    }
    policies = _policies(tmp_path, sources)
    with etcd_member(tmp_path) as member:
        agents = {h: _plain(member.endpoint, tmp_path, h, policies[h]) for h in "abc"}
        try:
            for host in ("a", "c"):
                _lines(agents[host], {"file[f3b]: created", "file[f4b]: created"})
            os.kill(agents["b"].proc.pid, signal.SIGKILL)
            for host in ("a", "c"):
                gone = {"file[f3b]: reversed", "file[f4b]: reversed"}
                _lines(agents[host], gone, LEASE + BOUND)
                assert not (tmp_path / f"x{host.upper()}" / "f3b").exists()
                assert (tmp_path / f"x{host.upper()}" / "f3c").exists()
        finally:
            for agent in agents.values():
                agent.__exit__(None, None, None)


def test_an_agent_waits_for_every_live_agent_and_drops_a_dead_one_after_its_lease(
    tmp_path: Path,
) -> None:
    sources = {
        "b": f"resources:\n  - file: {tmp_path}/out/b\n    recv: {{content: world[c].token}}\n",
        "a": f"resources:\n  - file: {tmp_path}/out/a\n    content: here\n",
    }
    (tmp_path / "out").mkdir()
    policies = _policies(tmp_path, sources)
    with etcd_member(tmp_path) as member:
        waiter = _plain(member.endpoint, tmp_path, "b", policies["b"])
        quick = None
        try:
            waiter.wait_for_line(lambda line: "waiting for world[c].token" in line, BOUND)
            quick = _plain(
                member.endpoint, tmp_path, "a", policies["a"], "--converged-timeout", "0"
            )
            quick.wait_for_line(lambda line: line == "cluster: converged here; waiting for b")
            assert quick.proc.poll() is None
            os.kill(waiter.proc.pid, signal.SIGKILL)
            assert quick.wait(LEASE + BOUND) == 0, quick.err
            assert (tmp_path / "out" / "a").read_text() == "here"
            assert not (tmp_path / "out" / "b").exists()
        finally:
            waiter.__exit__(None, None, None)
            if quick is not None:
                quick.__exit__(None, None, None)
