"""Which agents watch the other agents' converged keys: one that waits for them or one
an observer (the web view) follows; an agent that only runs and collects is not told of
every other agent's flips.

The cluster is played by a local world of another type (the engine takes any world but
the local one for a cluster's: convergence is then cluster-wide)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from convergent.world.keys import converged_key
from convergent.world.local import LocalWorld
from tests.exchange.support import BOUND, Agent, policy

NOOP = "resources:\n  - noop: one\n"


class _ClusterWorld(LocalWorld):
    """A local world the engine takes for a cluster's."""


def test_an_agent_that_neither_waits_nor_shows_does_not_watch_converged_keys(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[bool, bool, set[str]]:
        world = _ClusterWorld(hostname="me")
        await world.set(converged_key("b"), "1", lease=True)
        async with Agent(policy(NOOP, tmp_path), world=world) as agent:
            await agent.converged()
            hosts = agent.engine._hosts
            assert hosts is not None
            return hosts.watching, hosts.converged_loaded, set(hosts.converged)

    assert asyncio.run(main()) == (True, False, set())


def test_an_observer_of_the_world_makes_the_agent_watch_converged_keys(tmp_path: Path) -> None:
    async def main() -> set[str]:
        world = _ClusterWorld(hostname="me")
        await world.set(converged_key("b"), "1", lease=True)
        async with Agent(policy(NOOP, tmp_path), world=world) as agent:
            seen = asyncio.Event()
            agent.engine.observe().add_world(seen.set)
            async with asyncio.timeout(BOUND):
                while (hosts := agent.engine._hosts) is None or not hosts.converged_loaded:
                    seen.clear()
                    await seen.wait()
            return set(hosts.converged)

    assert "b" in asyncio.run(main())  # (and this agent itself, once it published)


def test_an_agent_that_waits_for_the_others_watches_converged_keys(tmp_path: Path) -> None:
    async def main() -> set[str]:
        world = _ClusterWorld(hostname="me")
        await world.set(converged_key("b"), "1", lease=True)
        async with Agent(policy(NOOP, tmp_path), world=world, converged_timeout=60) as agent:
            await agent.converged()
            hosts = agent.engine._hosts
            assert hosts is not None and hosts.converged_loaded
            return set(hosts.converged)

    assert "b" in asyncio.run(main())  # (and this agent itself, once it published)
