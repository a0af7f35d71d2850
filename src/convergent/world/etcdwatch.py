"""The etcd world's watches: one stream each, resumed after any failure from the
revision after the last event it delivered (see :mod:`convergent.world.etcd`).

``open_watch`` creates a stream (re-reading the current values when etcd compacted the
revision a watch waits for), ``follow`` delivers its events until the watch is stopped,
reopening it on the world's current endpoint whenever it breaks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from convergent.world.base import WatchCallback, WorldError
from convergent.world.etcdwire import Connection, Wire, prefix_end, text

__all__ = ["EtcdWorld", "Watch", "follow", "open_watch", "opened", "resync", "tell"]


class EtcdWorld(Protocol):
    """What a watch needs of :class:`convergent.world.etcd.EtcdWorld`."""

    call_timeout: float

    def _need_wire(self) -> Wire: ...

    def _connection(self) -> Connection: ...

    def _rotate(self, failed: Connection) -> None: ...

    def _unexpected(self, exc: Exception, what: str) -> None: ...

    async def _backoff(self, failures: int) -> None: ...

    async def _range(self, what: str, **request: Any) -> Any: ...


class Watch:
    """One watch of a key or a prefix: its callback and the next revision to deliver."""

    __slots__ = ("active", "callback", "key", "prefix", "revision", "task")

    def __init__(self, key: str, callback: WatchCallback, prefix: bool) -> None:
        self.key = key
        self.callback = callback
        self.prefix = prefix
        self.active = True
        self.revision = 0  # the next revision to deliver
        self.task: asyncio.Task[None] | None = None


async def opened(world: EtcdWorld, conn: Connection, watch: Watch) -> tuple[Connection, Any]:
    """``conn`` and a watch stream created on it (for ``EtcdWorld._call``)."""
    return conn, await open_watch(world, conn, watch)


async def open_watch(world: EtcdWorld, conn: Connection, watch: Watch) -> Any:
    """A watch stream on ``conn`` from ``watch.revision`` (0: from now), created."""
    wire = world._need_wire()
    rpc = wire.rpc
    if watch.prefix:
        start, end = prefix_end(watch.key)
    else:
        start, end = watch.key.encode(), b""
    call = conn.watch.Watch(metadata=wire.require_leader)
    try:
        create = rpc.WatchCreateRequest(key=start, range_end=end, progress_notify=True)
        if watch.revision:
            create.start_revision = watch.revision
        await call.write(rpc.WatchRequest(create_request=create))
        async with asyncio.timeout(world.call_timeout):  # (see EtcdWorld._keep_alive)
            reply = await call.read()
        if reply is wire.eof or not reply.created:
            raise ConnectionError(f"etcd at {conn.endpoint} did not create the watch")
        if reply.compact_revision:  # etcd no longer has what happened since: re-read
            call.cancel()
            await resync(world, watch, reply.compact_revision)
            return await open_watch(world, conn, watch)
        if reply.canceled:
            raise WorldError(
                f"etcd at {conn.endpoint} refused to watch {watch.key}: {reply.cancel_reason}"
            )
        if not watch.revision:
            watch.revision = reply.header.revision + 1
        return call
    except BaseException:
        call.cancel()
        raise


async def resync(world: EtcdWorld, watch: Watch, compacted: int) -> None:
    """``watch.revision`` was compacted away: tell the current values, go on after."""
    if watch.prefix:
        start, end = prefix_end(watch.key)
        reply = await world._range(f"read {watch.key}*", key=start, range_end=end)
    else:
        reply = await world._range(f"read {watch.key}", key=watch.key.encode())
    watch.revision = max(compacted, reply.header.revision + 1)
    for kv in reply.kvs:
        tell(watch, text(kv.key), text(kv.value))


async def follow(world: EtcdWorld, watch: Watch, conn: Connection, call: Any) -> None:
    """Deliver ``watch``'s events; reopen it on another endpoint when it breaks."""
    wire = world._need_wire()
    failures = 0
    while watch.active:
        try:
            if call is None:
                conn = world._connection()
                call = await open_watch(world, conn, watch)
            while watch.active:
                reply = await call.read()
                if reply is not wire.eof and reply.compact_revision:
                    call.cancel()  # etcd no longer has what happened since: re-read
                    call = None
                    await resync(world, watch, reply.compact_revision)
                    break
                if reply is wire.eof or reply.canceled:
                    raise ConnectionError(f"the watch ended: {getattr(reply, 'cancel_reason', '')}")
                failures = 0
                for event in reply.events:
                    value = None if event.type == wire.delete else text(event.kv.value)
                    tell(watch, text(event.kv.key), value)
                if reply.events:
                    watch.revision = reply.events[-1].kv.mod_revision + 1
                else:  # progress: nothing up to the header's revision
                    watch.revision = max(watch.revision, reply.header.revision + 1)
        except asyncio.CancelledError:
            if call is not None:
                call.cancel()
            if not conn.dropped():
                raise
            call = None  # its channel was closed: reopen it through the current one
            failures += 1
            await world._backoff(failures)
        except Exception as exc:  # the stream broke: reopen it through another member
            if call is not None:
                call.cancel()
            world._unexpected(exc, f"the watch of {watch.key}")
            call = None
            failures += 1
            world._rotate(conn)
            await world._backoff(failures)


def tell(watch: Watch, key: str, value: str | None) -> None:
    if not watch.active:
        return
    try:
        watch.callback(key, value)
    except Exception as exc:
        asyncio.get_running_loop().call_exception_handler(
            {"message": f"a world watch of {watch.key!r} raised", "exception": exc}
        )
