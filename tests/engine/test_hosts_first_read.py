"""Cluster-wide convergence: what an agent sees of the others after its first read.

The watch of a prefix (``/convergent/hosts/``, ``/convergent/converged/``) and the first
read of it travel on separate requests
(on etcd: a watch stream and a range), so the read can answer from a revision older
than an event the watch has already told. The world here is the local one with a
first read that answers from before the write it makes happen meanwhile: the ordering
the etcd wires can produce, made certain.
"""

from __future__ import annotations

import asyncio

from convergent.engine.collect import Collector
from convergent.engine.hosts import Hosts
from convergent.world.keys import converged_key, host_key
from convergent.world.local import LocalWorld


class _StaleFirstRead(LocalWorld):
    """The first ``get_prefix`` of a prefix of ``later``'s keys answers from before they
    are written (and told)."""

    def __init__(self, later: dict[str, str]) -> None:
        super().__init__(hostname="me")
        self.later = later

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        before = await super().get_prefix(prefix)
        for key in [k for k in self.later if k.startswith(prefix)]:
            await self.set(key, self.later.pop(key), lease=True)  # the watch is told now
        return before


def test_a_watch_event_newer_than_the_first_read_is_kept() -> None:
    async def main() -> tuple[bool, list[str]]:
        world = _StaleFirstRead({converged_key("b"): "1"})
        await world.set(host_key("b", "alive"), "1", lease=True)
        await world.set(converged_key("b"), "0", lease=True)  # what the old read shows
        hosts = Hosts(world, Collector("me", lambda report: None), lambda: None)
        await hosts.watch(converged=True)
        return hosts.everyone(), hosts.waiting_for()

    everyone, waiting = asyncio.run(main())
    assert waiting == [], "host b published 1 after the read's revision: it is converged"
    assert everyone


def test_a_key_the_watch_never_told_comes_from_the_first_read() -> None:
    async def main() -> list[str]:
        world = _StaleFirstRead({})
        await world.set(host_key("b", "alive"), "1", lease=True)
        await world.set(host_key("c", "alive"), "1", lease=True)
        await world.set(converged_key("b"), "1", lease=True)
        hosts = Hosts(world, Collector("me", lambda report: None), lambda: None)
        await hosts.watch(converged=True)
        return hosts.waiting_for()

    assert asyncio.run(main()) == ["c"]


def test_without_converged_the_others_are_not_counted_converged() -> None:
    """An agent that does not watch the converged keys never takes the others for
    converged (it does not wait for them either: nothing asks it)."""

    async def main() -> tuple[bool, list[str]]:
        world = _StaleFirstRead({})
        await world.set(host_key("b", "alive"), "1", lease=True)
        await world.set(converged_key("b"), "1", lease=True)
        hosts = Hosts(world, Collector("me", lambda report: None), lambda: None)
        await hosts.watch()
        return hosts.everyone(), sorted(hosts.converged)

    assert asyncio.run(main()) == (False, [])
