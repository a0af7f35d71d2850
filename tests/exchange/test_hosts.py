"""Three hosts on one etcd member, each agent an engine over its own etcd session: the
native exchange (examples/exchange/) ends with 24 files, and a withdrawn export leaves
every host within a bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from convergent.engine import Changed
from convergent.policy import load_policy_text
from convergent.state.db import StateDB
from convergent.world.etcd import EtcdWorld
from tests.etcd_support import etcd_member, require_etcd
from tests.exchange.support import BOUND, Agent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "exchange"
HOSTS = ("a", "b", "c")


def exchange_policy(host: str, root: Path) -> str:
    """examples/exchange/HOST.yaml with /tmp/exchangeX moved under ``root``."""
    return (EXAMPLES / f"{host}.yaml").read_text().replace("/tmp/exchange", f"{root}/exchange")


def files(root: Path) -> dict[str, list[str]]:
    return {
        h: sorted(p.name for p in (root / f"exchange{h.upper()}").iterdir())
        for h in HOSTS
        if (root / f"exchange{h.upper()}").is_dir()
    }


@contextlib.asynccontextmanager
async def agents(
    endpoint: str, root: Path, graphs: dict[str, Any]
) -> AsyncIterator[dict[str, Agent]]:
    """One agent per host, each with its own etcd session and state database."""
    async with contextlib.AsyncExitStack() as stack:
        running: dict[str, Agent] = {}
        for host, graph in graphs.items():
            world = EtcdWorld([endpoint], hostname=host, ttl=2)
            await world.start()
            stack.push_async_callback(world.aclose)
            db = stack.enter_context(StateDB(root / f"state-{host}.db"))
            running[host] = await stack.enter_async_context(Agent(graph, world=world, state=db))
        yield running


async def until(running: dict[str, Agent], predicate: Any) -> None:
    """Wait (bounded) until ``predicate()`` holds, looking again at each report of any
    agent (a file is written before its agent reports the change)."""
    waits = [
        asyncio.ensure_future(agent.rec.wait_for(lambda _: predicate()))
        for agent in running.values()
    ]
    try:
        async with asyncio.timeout(BOUND):
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    assert predicate()


def test_the_native_exchange_ends_with_8_files_on_each_of_3_hosts(tmp_path: Path) -> None:
    require_etcd()
    graphs = {h: load_policy_text(exchange_policy(h, tmp_path), f"{h}.yaml") for h in HOSTS}
    want = sorted(f"f{i}{h}" for i in (3, 4) for h in HOSTS)

    async def main(endpoint: str) -> None:
        async with agents(endpoint, tmp_path, graphs) as running:
            await until(
                running,
                lambda: (
                    all(len(v) == 8 for v in files(tmp_path).values()) and len(files(tmp_path)) == 3
                ),
            )
            for agent in running.values():
                await agent.converged()
            found = files(tmp_path)
            assert sum(len(v) for v in found.values()) == 24
            for host in HOSTS:
                assert [n for n in found[host] if n[1] in "34"] == want
                assert (tmp_path / f"exchange{host.upper()}" / "f3b").read_text() == (
                    "i am f3, exported from host B\n"
                )

    with etcd_member(tmp_path) as member:
        asyncio.run(main(member.endpoint))


def test_withdrawing_an_export_removes_it_everywhere_within_a_bounded_wait(
    tmp_path: Path,
) -> None:
    require_etcd()
    reversing = {
        h: exchange_policy(h, tmp_path).replace("{export: true}", "{export: true, reverse: true}")
        for h in HOSTS
    }
    graphs = {h: load_policy_text(text, f"{h}.yaml") for h, text in reversing.items()}
    lines = reversing["a"].splitlines(keepends=True)
    at = lines.index("  - file: f4a\n")
    withdrawn = load_policy_text("".join(lines[:at] + lines[at + 4 :]), "a.yaml")
    assert "file[f4a]" not in withdrawn and "file[f3a]" in withdrawn

    async def main(endpoint: str) -> None:
        async with agents(endpoint, tmp_path, graphs) as running:
            await until(running, lambda: sum(len(v) for v in files(tmp_path).values()) == 24)
            starts = {h: len(a.rec.reports) for h, a in running.items()}
            await running["a"].engine.swap(withdrawn)
            for host, agent in running.items():
                await agent.rec.wait_for(
                    lambda r: (
                        isinstance(r, Changed)
                        and r.resource == "file[f4a]"
                        and r.summary.startswith("reversed")
                    ),
                    starts[host],
                )
            for host in HOSTS:
                assert not (tmp_path / f"exchange{host.upper()}" / "f4a").exists()
                assert (tmp_path / f"exchange{host.upper()}" / "f3a").exists()

    with etcd_member(tmp_path) as member:
        asyncio.run(main(member.endpoint))
