"""What every World backend guarantees (``convergent.world.base``), run against each one.

A backend is an opener: how to open its world inside the running loop, and a second
writer onto the same world (for etcd, another agent: host "b" beside host "a", on one
real etcd member per module, emptied before each test). Nothing here assumes that
callbacks come before a write returns (the local world's) or after (etcd's): every
wait is on a queue, with a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from convergent.state import StateDB
from convergent.world import keys
from convergent.world.base import World
from convergent.world.local import LocalWorld
from tests.etcd_support import etcd_member, require_etcd, wipe

BOUND = 5.0  # seconds any wait for a callback may take

# (world, another writer onto the same world)
Opener = Callable[[], AbstractAsyncContextManager[tuple[World, World]]]


def _local_db(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    @asynccontextmanager
    async def open_world() -> AsyncIterator[tuple[World, World]]:
        with StateDB(tmp_path / "state" / "state.db") as db:
            world = LocalWorld(db)
            yield world, world  # the other writers of a local world are in this run

    return open_world


def _local_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    @asynccontextmanager
    async def open_world() -> AsyncIterator[tuple[World, World]]:
        world = LocalWorld()
        yield world, world

    return open_world


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    with etcd_member(tmp_path_factory.mktemp("etcd")) as member:
        yield member.endpoint


def _etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    from convergent.world.etcd import EtcdWorld

    endpoint: str = request.getfixturevalue("etcd_endpoint")
    wipe(endpoint)

    @asynccontextmanager
    async def open_world() -> AsyncIterator[tuple[World, World]]:
        async with (
            EtcdWorld([endpoint], hostname="a", ttl=2) as world,
            EtcdWorld([endpoint], hostname="b", ttl=2) as other,
        ):
            yield world, other

    return open_world


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "local-db": _local_db,
    "local-memory": _local_memory,
    "etcd": _etcd,
}


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](request, tmp_path)


def run(opener: Opener, body: Callable[[World, World], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opener() as (world, other):
            await asyncio.wait_for(body(world, other), BOUND * 4)

    asyncio.run(main())


class Seen:
    """A watch callback that queues what it is told."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()

    def __call__(self, key: str, value: str | None) -> None:
        self.queue.put_nowait((key, value))

    async def next(self) -> tuple[str, str | None]:
        return await asyncio.wait_for(self.queue.get(), BOUND)

    async def until(self, wanted: tuple[str, str | None]) -> list[tuple[str, str | None]]:
        """Everything seen up to and including ``wanted`` (a write may be told twice)."""
        got = [await self.next()]
        while got[-1] != wanted:
            got.append(await self.next())
        return got


def test_a_key_reads_back_what_was_last_written(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        assert await world.get("app/port") is None
        await world.set("app/port", "8080")
        assert await world.get("app/port") == "8080"
        await other.set("app/port", "9090")
        assert await world.get("app/port") == "9090"
        await world.set("app/name", "naïve\nline two")
        assert await world.get("app/name") == "naïve\nline two"
        assert await world.get("app") is None  # a prefix is not a key

    run(opener, body)


def test_delete_removes_the_key_and_deleting_a_missing_key_is_fine(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        await world.set("k", "v")
        await other.delete("k")
        assert await world.get("k") is None
        await world.delete("k")
        await world.delete("never-written")
        assert await world.get("never-written") is None

    run(opener, body)


def test_a_watch_sees_every_write_of_its_key_by_any_writer_in_order(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        seen = Seen()
        unsubscribe = await world.watch("db/host", seen)
        try:
            await other.set("db/host", "a")
            await world.set("db/hostname", "not this key")
            await other.set("db/host", "b")
            await other.delete("db/host")
            assert await seen.until(("db/host", None)) == [
                ("db/host", "a"),
                ("db/host", "b"),
                ("db/host", None),
            ]
        finally:
            unsubscribe()

    run(opener, body)


def test_a_prefix_watch_sees_every_key_under_it_and_nothing_else(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        seen = Seen()
        unsubscribe = await world.watch("app/", seen, prefix=True)
        try:
            await other.set("application", "outside the prefix")
            await other.set("app/port", "80")
            await world.set("app/name", "web")
            await other.delete("app/port")
            got = await seen.until(("app/port", None))
            assert [x for x in got if x[0] != "application"] == got
            assert got == [("app/port", "80"), ("app/name", "web"), ("app/port", None)]
        finally:
            unsubscribe()

    run(opener, body)


def test_after_unsubscribe_a_watch_is_never_called_again(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        stopped, still = Seen(), Seen()
        unsubscribe = await world.watch("k", stopped)
        keep = await world.watch("k", still)
        try:
            await other.set("k", "1")
            assert await stopped.next() == ("k", "1")
            unsubscribe()
            unsubscribe()  # twice: nothing happens
            await other.set("k", "2")
            await still.until(("k", "2"))  # the write was told to the watch that stayed
            assert stopped.queue.empty()
        finally:
            keep()

    run(opener, body)


def test_a_callback_that_raises_never_fails_the_writer(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))

        def broken(key: str, value: str | None) -> None:
            raise RuntimeError("watcher bug")

        seen = Seen()
        stop_broken = await world.watch("k", broken)
        stop_seen = await world.watch("k", seen)
        try:
            await other.set("k", "v")  # does not raise
            assert await seen.next() == ("k", "v")  # the other watch is still told
            assert await world.get("k") == "v"
        finally:
            stop_broken()
            stop_seen()
        assert [type(c.get("exception")) for c in reported] == [RuntimeError]

    run(opener, body)


def test_a_world_names_its_host_and_the_host_is_a_member_while_it_runs(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        assert world.hostname and "/" not in world.hostname
        members = await world.members()
        assert members[world.hostname] == keys.STATUS_ALIVE
        assert members[other.hostname] == keys.STATUS_ALIVE
        assert await other.get(keys.alive_key(world.hostname)) == keys.STATUS_ALIVE

    run(opener, body)


def test_a_prefix_read_returns_every_key_under_it_and_nothing_else(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        assert await world.get_prefix("/test/app/") == {}
        await world.set("/test/app/port", "80")
        await other.set("/test/app/name", "web")
        await other.set("/test/app/deep/er", "x")
        await world.set("/test/application", "outside the prefix")
        await world.set("/test/app/gone", "soon")
        await other.delete("/test/app/gone")
        await other.set("/test/app/leased", "while it runs", lease=True)
        assert await world.get_prefix("/test/app/") == {
            "/test/app/port": "80",
            "/test/app/name": "web",
            "/test/app/deep/er": "x",
            "/test/app/leased": "while it runs",
        }

    run(opener, body)


def test_a_prefix_read_returns_everything_however_large(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        big = "x" * 100_000
        for i in range(60):  # 6 MB: more than one gRPC message may hold by default
            await other.set(f"/test/big/{i:02}", big)
        found = await world.get_prefix("/test/big/")
        assert sorted(found) == [f"/test/big/{i:02}" for i in range(60)]
        assert all(value == big for value in found.values())

    run(opener, body)


def test_leased_keys_vanish_when_the_session_ends_and_durable_ones_stay(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        key = keys.host_key(world.hostname, "probe")
        durable = keys.host_key(world.hostname, "kept")
        await world.set(durable, "1")
        await world.set(key, "durable first")
        await world.set(key, "now leased", lease=True)
        assert await other.get(key) == "now leased"
        seen = Seen()
        unsubscribe = await other.watch(key, seen)
        try:
            await close(world)
            assert await seen.until((key, None))
        finally:
            unsubscribe()
        assert await other.get(key) is None
        assert keys.alive_key(world.hostname) not in await other.get_prefix(keys.HOSTS)
        assert await other.get(durable) == "1"

    run(opener, body)


def _over_one_transaction(base: str) -> dict[str, str]:
    """150 keys under ``base``: more than etcd takes in one transaction."""
    return {f"{base}{i:03d}": f"value {i}" for i in range(150)}


def test_set_many_writes_every_item_and_a_watch_sees_each_however_many(
    opener: Opener,
) -> None:
    async def body(world: World, other: World) -> None:
        base = keys.host_key(world.hostname, "many") + "/"
        items = _over_one_transaction(base)
        seen = Seen()
        unsubscribe = await other.watch(base, seen, prefix=True)
        try:
            await world.set_many(items, lease=True)
            await world.set_many({f"{base}000": "durable"})
            got = await seen.until((f"{base}000", "durable"))
            assert {k: v for k, v in got[:-1] if v != "durable"} == items
        finally:
            unsubscribe()
        assert await other.get_prefix(base) == {**items, f"{base}000": "durable"}
        await close(world)  # the leased ones go with the session, the durable one stays
        assert await other.get_prefix(base) == {f"{base}000": "durable"}

    run(opener, body)


def test_delete_many_deletes_every_key_and_a_watch_sees_each_however_many(
    opener: Opener,
) -> None:
    async def body(world: World, other: World) -> None:
        base = keys.host_key(world.hostname, "gone") + "/"
        items = _over_one_transaction(base)
        await world.set_many(items, lease=True)
        kept = f"{base}kept"
        await world.set(kept, "stays")
        seen = Seen()
        unsubscribe = await other.watch(base, seen, prefix=True)
        try:
            await world.delete_many([*items, f"{base}never-there"])
            await world.set(kept, "last")
            got = await seen.until((kept, "last"))
            deleted = {k for k, v in got[:-1] if v is None}
            assert set(items) <= deleted <= {*items, f"{base}never-there"}  # spurious: fine
        finally:
            unsubscribe()
        assert await other.get_prefix(base) == {kept: "last"}

    run(opener, body)


def test_set_many_writes_values_larger_together_than_one_request(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        base = keys.host_key(world.hostname, "large") + "/"
        items = {f"{base}{i}": str(i) * (200 * 1024) for i in range(4)}  # 800 KiB in all
        await world.set_many(items, lease=True)
        assert await other.get_prefix(base) == items

    run(opener, body)


def test_a_lease_is_dropped_by_a_later_durable_write(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        key = keys.host_key(world.hostname, "probe")
        await world.set(key, "leased", lease=True)
        await world.set(key, "durable")
        await close(world)
        assert await other.get(key) == "durable"

    run(opener, body)


def test_a_lock_has_one_holder_at_a_time_in_the_order_asked(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        log: list[str] = []
        inside = 0
        first_in = asyncio.Event()

        async def hold(who: str, w: World) -> None:
            nonlocal inside
            async with w.lock("deploy"):
                inside += 1
                log.append(f"{who} in")
                assert inside == 1, log
                first_in.set()
                # round trips to the world: a second holder would get in meanwhile
                for i in range(3):
                    await w.set(f"/test/lock/{who}", str(i))
                    await w.get(f"/test/lock/{who}")
                log.append(f"{who} out")
                inside -= 1

        first = asyncio.create_task(hold("a", world))
        await first_in.wait()
        rest = [asyncio.create_task(hold(who, w)) for who, w in (("b", other), ("c", world))]
        await asyncio.gather(first, *rest)
        assert log[:2] == ["a in", "a out"]
        assert sorted(log[2:]) == ["b in", "b out", "c in", "c out"]
        assert log[2][0] == log[3][0]  # the next holder left before the last came in

    run(opener, body)


def test_a_lock_is_released_when_its_holder_raises(opener: Opener) -> None:
    async def body(world: World, other: World) -> None:
        with pytest.raises(RuntimeError):
            async with world.lock("deploy"):
                raise RuntimeError("the holder failed")
        async with other.lock("deploy"):
            pass

    run(opener, body)


async def close(world: World) -> None:
    """End ``world``'s session (the backend's ``aclose``)."""
    await world.aclose()  # type: ignore[attr-defined]


# -- the local world only -----------------------------------------------------------------


def test_the_local_world_keeps_its_values_in_the_state_database(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"

    async def write() -> None:
        with StateDB(path) as db:
            await LocalWorld(db).set("greeting", "hello")

    asyncio.run(write())
    with StateDB(path, readonly=True) as db:
        assert db.get_kv("greeting") == "hello"
        assert LocalWorld(db).durable
    assert not LocalWorld().durable
