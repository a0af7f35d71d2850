"""``kv`` on the etcd world: one host sets a key, another reads it and sends it on; a
secret never reaches the shared world."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import ResourceError
from convergent.resources.base import Change, Context
from convergent.resources.kv import Kv
from convergent.state import StateDB
from convergent.world import keys
from convergent.world.base import World
from tests.etcd_support import etcd_member, require_etcd

BOUND = 10.0


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    with etcd_member(tmp_path_factory.mktemp("etcd")) as member:
        yield member.endpoint


def _ctx(
    rid: str,
    world: World,
    event: Callable[[], None] = lambda: None,
    ready: Callable[[], None] = lambda: None,
    **kw: Any,
) -> Context:
    return Context(
        rid, ready=ready, event=event, log=print, shared=lambda f: f(), world=world, **kw
    )


def on_two_hosts(endpoint: str, body: Callable[[World, World], Any]) -> None:
    from convergent.world.etcd import EtcdWorld

    async def main() -> None:
        async with (
            EtcdWorld([endpoint], hostname="a", ttl=2) as a,
            EtcdWorld([endpoint], hostname="b", ttl=2) as b,
        ):
            await asyncio.wait_for(body(a, b), BOUND)

    asyncio.run(main())


def test_a_kv_set_on_one_host_is_read_by_another_and_sent_on(endpoint: str) -> None:
    async def body(a: World, b: World) -> None:
        await a.delete(keys.kv_key("a", "port"))
        writer = Kv("port", value="8080")
        reader = Kv("port-of-a", key="port", host="a")
        events = asyncio.Queue[None]()
        watched = asyncio.Event()
        # as the engine does: a's write comes once b's watch is in place (ready)
        on_b = _ctx("kv[port-of-a]", b, event=lambda: events.put_nowait(None), ready=watched.set)
        watching = asyncio.create_task(reader.watch(on_b))
        try:
            await asyncio.wait_for(watched.wait(), BOUND)
            assert await reader.check(on_b) is None
            assert reader.outputs() == {}  # nothing to send yet: its receivers wait

            on_a = _ctx("kv[port]", a)
            change = await writer.check(on_a)
            assert change == Change("set")
            await writer.apply(on_a, change)
            await asyncio.wait_for(events.get(), BOUND)  # b's watch saw a's write
            assert await reader.check(on_b) is None  # a reader never changes anything
            assert reader.outputs() == {"value": "8080"}
            assert await b.get("/convergent/hosts/a/kv/port") == "8080"

            changed = Kv("port", value="9090")
            await changed.apply(on_a, Change("changed"))
            while True:
                await asyncio.wait_for(events.get(), BOUND)
                await reader.check(on_b)
                if reader.outputs() == {"value": "9090"}:
                    break
        finally:
            watching.cancel()

    on_two_hosts(endpoint, body)


def test_a_secret_received_by_kv_never_reaches_the_shared_world(
    endpoint: str, tmp_path: Path
) -> None:
    async def body(a: World, b: World) -> None:
        with StateDB(tmp_path / "state.db") as db:
            db.set_secret("password[db]", "s3cret-value")
            kv = Kv("token", value="s3cret-value")
            ctx = _ctx("kv[token]", a, state=db)
            change = await kv.check(ctx)
            assert change is not None
            with pytest.raises(ResourceError, match="secret") as info:
                await kv.apply(ctx, change)
            assert "s3cret-value" not in str(info.value)
        assert await b.get(keys.kv_key("a", "token")) is None

    on_two_hosts(endpoint, body)
