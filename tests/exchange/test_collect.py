"""Exported and collected resources on one agent's world: an export is published and not
applied unless collected; collect takes every host's exports live, within its allow-list.

Another host is played by writing its keys into the same world, as its agent would.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from convergent.engine import Changed, Failed, Log, WouldChange
from convergent.state.db import StateDB
from convergent.world.keys import export_key
from convergent.world.local import LocalWorld
from tests.clock import run_virtual
from tests.exchange.support import Agent, policy


def _export(kind: str, name: str, **params: object) -> str:
    return json.dumps({"kind": kind, "name": name, "params": params, "meta": {}})


def test_an_exported_resource_is_published_and_not_applied_where_it_is_not_collected(
    tmp_path: Path,
) -> None:
    graph = policy(
        """
resources:
  - file: TMP/local
    content: "here\\n"
  - file: TMP/shared
    content: "for the others\\n"
    meta: {export: true}
""",
        tmp_path,
    )

    async def main() -> None:
        world = LocalWorld(hostname="a")
        async with Agent(graph, world=world) as agent:
            await agent.converged()
            published = await world.get(export_key("a", "file", f"{tmp_path}/shared"))
        assert published is not None
        body = json.loads(published)
        assert body["kind"] == "file"
        assert body["params"]["content"] == "for the others\n"
        assert (tmp_path / "local").exists()
        assert not (tmp_path / "shared").exists()
        # The run is over: the export is withdrawn.
        assert await world.get_prefix("/convergent/hosts/a/exports/") == {}

    asyncio.run(main())


def test_an_export_collected_by_its_own_host_is_applied(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - file: TMP/shared
    content: "mine\\n"
    meta: {export: true}
collect:
  - kind: file
    where: {paths: [TMP]}
""",
        tmp_path,
    )

    async def main() -> None:
        async with Agent(graph, world=LocalWorld(hostname="a")) as agent:
            await agent.converged()
        assert (tmp_path / "shared").read_text() == "mine\n"

    asyncio.run(main())


def test_a_new_export_joins_the_running_graph_and_a_withdrawn_one_is_reversed(
    tmp_path: Path,
) -> None:
    graph = policy(
        """
resources:
  - noop: here
collect:
  - kind: file
    where: {paths: [TMP/in/]}
""",
        tmp_path,
    )
    target = tmp_path / "in" / "from-b"
    key = export_key("b", "file", str(target))

    async def main(db: StateDB) -> None:
        world = LocalWorld(db, hostname="a")
        async with Agent(graph, world=world, state=db) as agent:
            await agent.converged()
            (tmp_path / "in").mkdir()
            start = len(agent.rec.reports)
            text = json.dumps(
                {
                    "kind": "file",
                    "name": str(target),
                    "params": {"content": "from b\n"},
                    "meta": {"reverse": True},
                }
            )
            await world.set(key, text, lease=True)
            await agent.rec.wait_for(
                lambda r: isinstance(r, Changed) and r.resource == f"file[{target}]", start
            )
            assert target.read_text() == "from b\n"
            assert f"file[{target}]" in agent.engine.graph
            start = len(agent.rec.reports)
            await world.delete(key)
            await agent.rec.wait_for(
                lambda r: isinstance(r, Changed) and r.summary.startswith("reversed"), start
            )
            assert not target.exists()
            assert f"file[{target}]" not in agent.engine.graph

    with StateDB(tmp_path / "state.db") as db:
        asyncio.run(main(db))


def test_an_export_outside_the_allow_list_is_refused_naming_the_host(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - noop: here
collect:
  - kind: file
    where: {paths: [TMP/in/]}
""",
        tmp_path,
    )
    outside = tmp_path / "in" / ".." / "escaped"

    async def main() -> None:
        world = LocalWorld(hostname="a")
        escaped = _export("file", str(outside), content="x")
        await world.set(export_key("mallory", "file", str(outside)), escaped)
        copy = tmp_path / "in" / "copy"
        await world.set(
            export_key("mallory", "file", str(copy)),
            _export("file", str(copy), source="/etc/shadow"),
        )
        async with Agent(graph, world=world) as agent:
            await agent.converged()
            refused = [r for r in agent.rec.of(Failed)]
        messages = sorted(r.message for r in refused)  # type: ignore[attr-defined]
        assert len(messages) == 2, messages
        assert all("refused the export from host mallory" in m for m in messages)
        assert any("outside the allowed paths" in m for m in messages)
        assert any("source:" in m for m in messages)
        assert not (tmp_path / "escaped").exists()
        assert not copy.exists()

    asyncio.run(main())


def test_an_export_for_named_hosts_is_collected_only_there(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - noop: here
collect:
  - kind: file
    where: {paths: [TMP]}
""",
        tmp_path,
    )

    async def main() -> None:
        world = LocalWorld(hostname="a")
        for host, name in (("a", "for-a"), ("c", "for-c")):
            path = str(tmp_path / name)
            body = json.loads(_export("file", path, content="x"))
            body["meta"] = {"export": [host]}
            await world.set(export_key("b", "file", path), json.dumps(body))
        async with Agent(graph, world=world) as agent:
            await agent.converged()
        assert (tmp_path / "for-a").exists()
        assert not (tmp_path / "for-c").exists()

    asyncio.run(main())


def test_under_noop_nothing_is_published_or_withdrawn(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - file: TMP/shared
    content: "x\\n"
    meta: {export: true}
collect:
  - kind: file
    where: {paths: [TMP]}
""",
        tmp_path,
    )
    earlier = export_key("a", "file", "older")

    async def main() -> None:
        world = LocalWorld(hostname="a")
        await world.set(earlier, _export("file", "older", content="y"), lease=True)
        async with Agent(graph, world=world, noop=True) as agent:
            await agent.converged()
        # Its own export is shown as if collected; nothing is written anywhere.
        assert [r.resource for r in agent.rec.of(WouldChange)] == [f"file[{tmp_path}/shared]"]
        assert not (tmp_path / "shared").exists()
        assert await world.get_prefix("/convergent/hosts/a/exports/") == {
            earlier: _export("file", "older", content="y")
        }

    asyncio.run(main())


class _Flaky(LocalWorld):
    """A local world whose prefix reads fail ``failures`` times first (etcd away)."""

    def __init__(self, failures: int) -> None:
        super().__init__(hostname="a")
        self.failures = failures

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("etcd at 127.0.0.1:2379 is unreachable")
        return await super().get_prefix(prefix)


def test_a_failing_world_is_tried_again_and_the_run_goes_on(tmp_path: Path) -> None:
    graph = policy(
        """
resources:
  - file: TMP/shared
    content: "x\\n"
    meta: {export: true}
collect:
  - kind: file
    where: {paths: [TMP]}
""",
        tmp_path,
    )

    async def main() -> None:
        world = _Flaky(failures=2)
        async with Agent(graph, world=world) as agent:
            await agent.converged()
            said = [r.message for r in agent.rec.of(Log) if r.resource == "world"]  # type: ignore[attr-defined]
        assert said == [
            "etcd at 127.0.0.1:2379 is unreachable; trying again in 0.1 s",
            "etcd at 127.0.0.1:2379 is unreachable; trying again in 0.2 s",
        ]
        assert (tmp_path / "shared").read_text() == "x\n"

    run_virtual(main())


def test_an_export_carries_what_differs_from_the_defaults_and_is_collected_the_same() -> None:
    """The published JSON leaves out the parameters at their defaults; the collector's
    defaults fill them in again: the collected resource has the exporter's parameters."""
    from convergent.engine.collect import Collector, encode
    from convergent.graph.core import Graph
    from convergent.policy.build import Collect
    from convergent.resources.base import Meta, convert_params, get_kind

    cls = get_kind("file")
    assert cls is not None
    given = {"path": "/srv/a/motd", "content": "hi\n", "mode": "0600", "parents": True}
    exported = cls("motd", convert_params(cls.params_type, given), meta=Meta(export=True))
    body = json.loads(encode(exported))
    assert body["params"] == {"path": "/srv/a/motd", "content": "hi\n", "mode": "0600",
                              "parents": True}  # fmt: skip
    assert body["meta"] == {"export": True}
    collector = Collector("b", lambda report: None)
    key = export_key("a", "file", "motd")
    assert collector.seen(key, encode(exported))
    base: Graph[object] = Graph()
    base.collect = (Collect(kind="file", where=None, pattern=None),)
    graph = collector.graph_for(base)  # type: ignore[arg-type]
    (collected,) = graph.vertices.values()
    assert collected.params == exported.params


def test_exports_past_the_graphs_limit_are_left_out_and_said_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other hosts' exports join this host's graph only up to the limit a policy has
    (here 3, with one resource of the policy's own): the rest are left out, told once."""
    from convergent.engine import collect
    from convergent.graph.core import Graph
    from convergent.policy.build import Collect
    from convergent.resources.base import get_kind

    monkeypatch.setattr(collect, "MAX_RESOURCES", 3)
    reports: list[object] = []
    collector = collect.Collector("b", reports.append)
    for i in range(5):
        assert collector.seen(export_key("a", "noop", f"n{i}"), _export("noop", f"n{i}"))
    noop = get_kind("noop")
    assert noop is not None
    base: Graph[object] = Graph()
    base.add(noop("mine", noop.params_type()))  # type: ignore[arg-type]
    base.collect = (Collect(kind="noop", where=None, pattern=None),)
    graph = collector.graph_for(base)  # type: ignore[arg-type]
    assert sorted(graph.vertices) == ["noop[mine]", "noop[n0]", "noop[n1]"]
    (failed,) = reports
    assert isinstance(failed, Failed) and failed.resource == "noop[n2]"
    assert "graph holds 3 resources already" in failed.message
    collector.graph_for(base)  # type: ignore[arg-type]
    assert len(reports) == 1  # not told again while nothing changes
