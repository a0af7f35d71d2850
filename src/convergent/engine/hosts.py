"""What an agent sees of the other agents of its world: through one watch of
``/convergent/hosts/``, every host's exports (for ``collect:``, kept by the
:class:`~convergent.engine.collect.Collector`) and which agents are alive; through a
second watch of ``/convergent/converged/``, only when asked for (:meth:`Hosts.watch`
with ``converged``, :meth:`Hosts.watch_converged`), which agents are converged; and its
own converged state, which it publishes.

Cluster-wide convergence (a world other than the local one): each agent keeps
``/convergent/converged/HOST`` at ``1`` or ``0`` with its lease, written whenever its
graph's convergence flips (the latest state only: a burst of flips is one write).
:meth:`Hosts.everyone` says whether every other agent whose ``alive`` key exists has
published ``1``; an agent that dies loses both keys when its lease ends, and is no
longer waited for. ``convergent run --converged-timeout N`` then ends when this graph
and every other agent have been converged together for N seconds. An agent that neither
waits for the others nor shows them (the web view) is not told of their flips: each new
graph of each agent is two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from convergent.world.keys import (
    ALIVE,
    CONVERGED_KEYS,
    EXPORTS,
    HOSTS,
    converged_key,
    split_converged_key,
    split_host_key,
)

if TYPE_CHECKING:
    from convergent.engine.collect import Collector
    from convergent.world.base import Unsubscribe, World

__all__ = ["Hosts", "everyone_long_enough", "keep_published"]


class Hosts:
    """The other agents of ``world`` as last seen; ``exports_changed()`` is called when
    an export changed (the graph to run may change), ``changed`` is set when an agent's
    alive or converged state changed."""

    __slots__ = (
        "_published",
        "_touched",
        "_unwatch",
        "alive",
        "changed",
        "collector",
        "converged",
        "converged_loaded",
        "exports_changed",
        "hostname",
        "loaded",
        "seen_changed",
        "world",
    )

    def __init__(
        self, world: World, collector: Collector, exports_changed: Callable[[], None]
    ) -> None:
        self.world = world
        self.hostname = world.hostname
        self.collector = collector
        self.exports_changed = exports_changed
        self.alive: set[str] = set()
        self.converged: set[str] = set()
        self.loaded = False  # the first read of the hosts' keys is done
        self.converged_loaded = False  # the same of the converged keys: `everyone` may be true
        self.changed = asyncio.Event()
        self._unwatch: list[Unsubscribe] = []
        self._published: str | None = None
        self._touched: set[str] | None = None  # keys the watch told while the first read ran
        # Called when what this agent sees of the others changed (alive, converged,
        # exports): the observers' side (engine/follow.py), never the run's.
        self.seen_changed: Callable[[], None] = _nothing

    @property
    def watching(self) -> bool:
        return self.loaded

    async def watch(self, *, converged: bool = False) -> None:
        """Watch every host's keys (and, with ``converged``, every converged key), then
        read them once (no write is missed between)."""
        if not self.loaded:
            await self._follow(HOSTS)
            self.loaded = True
        if converged:
            await self.watch_converged()
        self.changed.set()
        self.seen_changed()

    async def watch_converged(self) -> None:
        """Watch every agent's converged key too, then read them once."""
        if self.converged_loaded:
            return
        await self._follow(CONVERGED_KEYS)
        self.converged_loaded = True
        self.changed.set()
        self.seen_changed()

    async def _follow(self, prefix: str) -> None:
        """Watch ``prefix``, then read it once.

        The read may answer from a revision older than an event the watch has already
        told (they travel on separate requests): a key the watch told about while the
        read ran keeps the watch's value, which every later change of it follows in
        order. Taking the read's older value instead left a host seen unconverged for
        good, and ``--converged-timeout`` waited for it forever."""
        self._forget(prefix)  # what an earlier try saw before it failed may be gone since
        touched = self._touched = set()
        try:
            unwatch = await self.world.watch(prefix, self._seen, prefix=True)
            try:
                found = await self.world.get_prefix(prefix)
            except BaseException:
                unwatch()  # the next try watches again
                raise
        finally:
            self._touched = None
        self._unwatch.append(unwatch)
        for key, value in found.items():
            if key not in touched:
                self._seen(key, value, first=True)

    def _forget(self, prefix: str) -> None:
        """Drop what was seen under ``prefix`` (the watch and the read tell it again)."""
        if prefix == CONVERGED_KEYS:
            self.converged.clear()
        else:
            self.alive.clear()
            self.collector.exports.clear()

    def stop(self) -> None:
        """Stop watching; what was seen of the others is forgotten."""
        for unwatch in self._unwatch:
            unwatch()
        self._unwatch = []
        self.collector.exports.clear()
        self.alive.clear()
        self.converged.clear()
        self.loaded = self.converged_loaded = False
        self.seen_changed()

    def _seen(self, key: str, value: str | None, first: bool = False) -> None:
        if not first and self._touched is not None:
            self._touched.add(key)
        host = split_converged_key(key)
        if host is not None:
            self._status(self.converged, host, value == "1", first)
            return
        split = split_host_key(key)
        if split is None:
            return
        host, rest = split
        if rest == ALIVE:
            self._status(self.alive, host, value is not None, first)
        elif rest.startswith(EXPORTS + "/") and self.collector.seen(key, value) and not first:
            self.exports_changed()
            self.seen_changed()

    def _status(self, known: set[str], host: str, now: bool, first: bool) -> None:
        """``host`` is (``now``) or is not in ``known`` (alive, converged)."""
        if now:
            known.add(host)
        else:
            known.discard(host)
        self.changed.set()
        if not first:
            self.seen_changed()

    def everyone(self) -> bool:
        """Whether every other live agent has published that it is converged."""
        if not (self.loaded and self.converged_loaded):
            return False
        me = self.hostname
        return all(host in self.converged for host in self.alive if host != me)

    def waiting_for(self) -> list[str]:
        """The live agents not converged (this one left out), sorted."""
        return sorted(h for h in self.alive if h != self.hostname and h not in self.converged)

    async def leave(self, bound: float) -> None:
        """At the end of the run: stop watching, withdraw this host's exports (for at
        most ``bound`` s; what is left goes with the session's lease)."""
        self.stop()
        collector = self.collector
        if collector.published:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(bound):
                    await self.world.delete_many(sorted(collector.published))
            collector.published = {}

    async def publish(self, converged: bool) -> None:
        """Publish this agent's converged state (leased), when it differs from the last."""
        state = "1" if converged else "0"
        if state != self._published:
            await self.world.set(converged_key(self.hostname), state, lease=True)
            self._published = state


def _nothing() -> None:
    pass


async def keep_published(
    hosts_now: Callable[[], Hosts | None],
    converged: Callable[[], bool],
    flipped: asyncio.Event,
    say: Callable[[str], None],
    retry: float,
) -> None:
    """Keep this agent's converged key at ``converged()``: published at each ``flipped``
    (the latest state only), once the hosts are there; a failed write is tried again
    after ``retry`` s, doubling up to 5 s, and ``say`` tells why."""
    failures = 0
    while True:
        hosts = hosts_now()
        if hosts is not None:
            try:
                await hosts.publish(converged())
            except Exception as exc:  # the world failed: the latest state, later
                failures += 1
                delay = min(retry * 2 ** (failures - 1), 5.0)
                say(f"{exc}; trying again in {delay:g} s")
                await asyncio.sleep(delay)
                continue
            failures = 0
        await flipped.wait()
        flipped.clear()


async def everyone_long_enough(
    seconds: float | None,
    converged: Callable[[], bool],
    hosts_now: Callable[[], Hosts | None],
    flipped: asyncio.Event,
    say: Callable[[str], None],
) -> None:
    """Return once this agent (``converged()``) and every other live agent have stayed
    converged together for ``seconds`` (None: never). ``flipped`` is set whenever this
    agent's convergence flips; ``say`` tells, while this agent is converged, whom it
    waits for (each time that changes)."""
    if seconds is None:
        await asyncio.Event().wait()
    bound = max(0.0, seconds or 0.0)

    def together() -> bool:
        hosts = hosts_now()
        return converged() and hosts is not None and hosts.everyone()

    async def changed() -> None:
        hosts = hosts_now()
        waits = [asyncio.ensure_future(flipped.wait())]
        if hosts is not None:
            waits.append(asyncio.ensure_future(hosts.changed.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        flipped.clear()
        if hosts is not None:
            hosts.changed.clear()

    shown: list[str] = []
    while True:
        while not together():
            hosts = hosts_now()
            if converged() and hosts is not None and hosts.converged_loaded:
                waiting = hosts.waiting_for()
                if waiting != shown:
                    shown = waiting
                    say(f"converged here; waiting for {', '.join(waiting)}")
            await changed()
        try:
            async with asyncio.timeout(bound):
                while together():
                    await changed()
        except TimeoutError:
            return
