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
from convergent.world.keys import HOSTS, converged_key, export_key, host_key
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


class _FailingFirstRead(LocalWorld):
    """The first read of ``/convergent/hosts/`` fails after the watch told of host b."""

    def __init__(self) -> None:
        super().__init__(hostname="me")
        self.fail = True

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        if prefix == HOSTS and self.fail:
            self.fail = False
            await self.set(host_key("b", "alive"), "1", lease=True)  # the watch is told
            await self.set(export_key("b", "file", "/x"), _EXPORT, lease=True)
            raise ConnectionError("etcd away")
        return await super().get_prefix(prefix)


_EXPORT = '{"kind":"file","name":"/x","params":{},"meta":{}}'


def test_a_host_gone_between_a_failed_first_read_and_the_retry_is_forgotten() -> None:
    """What the watch told before the read failed is not kept past the retry: host b
    left meanwhile, and is neither waited for nor collected."""

    async def main() -> tuple[list[str], list[str]]:
        world = _FailingFirstRead()
        hosts = Hosts(world, Collector("me", lambda report: None), lambda: None)
        try:
            await hosts.watch()
        except ConnectionError:
            pass
        else:
            raise AssertionError("the first read did not fail")
        await world.delete_many([host_key("b", "alive"), export_key("b", "file", "/x")])
        await hosts.watch()  # the retry
        return sorted(hosts.alive), sorted(hosts.collector.exports)

    assert asyncio.run(main()) == (["me"], [])  # this agent itself, and no b
