"""The ``value`` kind and ``world[HOST].NAME`` receivers: a value is published under the
host's prefix; a receiver waits for it (saying what for), fails at ``wait_timeout``,
and is checked again whenever the value changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Failed
from convergent.world.keys import value_key
from convergent.world.local import LocalWorld
from tests.clock import run_virtual
from tests.engine.support import logs
from tests.exchange.support import Agent, policy

WAITS = "waiting for world[b].token (for content: host b has not published a value 'token')"


def test_a_waiting_receiver_says_what_it_waits_for_and_fails_at_wait_timeout(
    tmp_path: Path,
) -> None:
    graph = policy(
        """
resources:
  - file: TMP/token
    recv: {content: world[b].token}
    meta: {wait_timeout: 30}
""",
        tmp_path,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Agent(graph, world=LocalWorld(hostname="a")) as agent:
            start = loop.time()
            report = await agent.rec.wait_for(lambda r: isinstance(r, Failed), bound=100)
            waited = loop.time() - start
            assert not any(isinstance(r, Converged) for r in agent.rec.reports[:-1])
            await agent.converged()
        assert 30 <= waited < 31
        assert logs(agent.rec, f"file[{tmp_path}/token]") == [WAITS]
        assert report.message.endswith(  # type: ignore[attr-defined]
            "waited 30 s (meta.wait_timeout) for world[b].token (for content: host b has "
            "not published a value 'token'); start that host's agent with a value "
            "resource of that name, or raise wait_timeout"
        )
        assert agent.engine.converged
        assert not (tmp_path / "token").exists()

    run_virtual(main())


def test_a_changed_value_rechecks_the_receivers(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - file: TMP/token
    recv: {content: world[b].token}
  - value: mine
    content: "from a"
  - file: TMP/mine
    recv: {content: world[a].mine}
""",
        tmp_path,
    )
    token = tmp_path / "token"

    async def main() -> None:
        world = LocalWorld(hostname="a")
        async with Agent(graph, world=world) as agent:
            await agent.rec.wait_for(lambda r: getattr(r, "message", "") == WAITS)
            assert not agent.engine.converged  # a waiting receiver is not settled
            assert await world.get(value_key("a", "mine")) == "from a"
            for text in ("first", "second"):
                start = len(agent.rec.reports)
                await world.set(value_key("b", "token"), text, lease=True)
                await agent.rec.wait_for(
                    lambda r: isinstance(r, Changed) and r.resource == f"file[{token}]", start
                )
                assert token.read_text() == text
            await agent.converged()
        assert (tmp_path / "mine").read_text() == "from a"

    asyncio.run(main())


def test_every_hosts_value_comes_as_one_list_sorted_by_host(tmp_path: Path) -> None:
    made = tmp_path / "made"
    graph = policy(
        """
resources:
  - exec: make
    cmd: [placeholder]
    creates: TMP/made
    recv: {cmd: world[*].argv}
""",
        tmp_path,
    )

    async def main() -> None:
        world = LocalWorld(hostname="a")
        await world.set(value_key("b", "argv"), str(made))
        await world.set(value_key("a", "argv"), "touch")
        async with Agent(graph, world=world) as agent:
            await agent.rec.wait_for(
                lambda r: isinstance(r, Changed) and r.resource == "exec[make]"
            )
        assert made.exists()

    asyncio.run(main())


def test_a_secret_never_goes_to_the_world_through_a_value() -> None:
    from convergent.engine import Engine
    from convergent.errors import GraphError
    from convergent.graph import Graph
    from convergent.resources.password import Password
    from convergent.resources.value import Value

    graph: Graph[Any] = Graph()
    graph.add(Password("db"))
    graph.add(Value("token"), recv={"content": "password[db].password"})
    with pytest.raises(GraphError, match="is a secret, and a value is published"):
        Engine(graph, world=LocalWorld(hostname="a"))
