"""Locks of the etcd world: etcd's mutex recipe over the agent's session.

A key per contender under ``/convergent/locks/NAME/`` on the session lease; the
contender whose key has the lowest create revision holds the lock, each other waits for
the deletion of the one just before it. A holder that dies releases it when its lease
expires. Part of :mod:`convergent.world.etcd` (``EtcdWorld.lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from convergent.world import keys
from convergent.world.base import Unsubscribe, WatchCallback, WorldError
from convergent.world.etcdwire import prefix_end, text

__all__ = ["EtcdWorld", "hold"]


class EtcdWorld(Protocol):
    """What a lock needs of :class:`convergent.world.etcd.EtcdWorld`."""

    hostname: str

    @property
    def rpc(self) -> Any: ...

    def lock_key(self, prefix: str) -> str: ...

    async def put(self, key: str, value: str, *, lease: bool) -> None: ...

    async def read(self, what: str, **request: Any) -> Any: ...

    async def delete(self, key: str) -> None: ...

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe: ...


@contextlib.asynccontextmanager
async def hold(world: EtcdWorld, name: str) -> AsyncIterator[None]:
    """Hold the lock ``name`` inside the ``async with``."""
    prefix = keys.lock_prefix(name)
    mine = world.lock_key(prefix)
    await world.put(mine, world.hostname, lease=True)
    try:
        await _wait_turn(world, name, prefix, mine)
        yield
    finally:
        with contextlib.suppress(WorldError):  # else it goes with the lease
            await asyncio.shield(world.delete(mine))


async def _wait_turn(world: EtcdWorld, name: str, prefix: str, mine: str) -> None:
    """Until ``mine`` is the oldest contender's key under ``prefix``."""
    rpc = world.rpc
    start, end = prefix_end(prefix)
    while True:
        own = await world.read(f"read {mine}", key=mine.encode())
        if not own.kvs:
            raise WorldError(
                f"lock {name}: this agent's etcd session ended while it waited;"
                " the lock was not taken (is the cluster reachable?)"
            )
        before = await world.read(
            f"read {prefix}*",
            key=start,
            range_end=end,
            max_create_revision=own.kvs[0].create_revision - 1,
            sort_order=rpc.RangeRequest.DESCEND,
            sort_target=rpc.RangeRequest.CREATE,
            limit=1,
        )
        if not before.kvs:
            return
        holder = text(before.kvs[0].key)
        gone = asyncio.Event()
        stop = await world.watch(holder, _on_deletion(gone))
        try:
            if (await world.read(f"read {holder}", key=holder.encode())).kvs:
                await gone.wait()
        finally:
            stop()


def _on_deletion(event: asyncio.Event) -> WatchCallback:
    def told(key: str, value: str | None) -> None:
        if value is None:
            event.set()

    return told
