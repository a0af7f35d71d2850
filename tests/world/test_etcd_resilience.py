"""The etcd world when things die: a member (kill -9 the one an agent talks to), an
agent (its leased keys and its locks go with its lease). Real 3-member clusters on
127.0.0.1; every kill is on a chosen event, every wait bounded."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.world import keys
from tests.etcd_support import EtcdCluster, compact, etcd_cluster, require_etcd

pytestmark = pytest.mark.timeout(120)

BOUND = 20.0  # seconds any wait here may take
TTL = 2.0  # the session TTL of the agents here
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    with etcd_cluster(tmp_path, 3) as running:
        yield running


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await asyncio.wait_for(body(), BOUND * 3)

    asyncio.run(main())


def world(endpoints: list[str], hostname: str, **kwargs: Any) -> Any:
    from convergent.world.etcd import EtcdWorld

    return EtcdWorld(endpoints, hostname=hostname, ttl=TTL, **kwargs)


@pytest.mark.parametrize("writes", [300])
def test_no_watch_event_is_lost_when_the_member_the_agent_talks_to_is_killed(
    cluster: EtcdCluster, writes: int
) -> None:
    victim = cluster.members[0]
    others = [m.endpoint for m in cluster.members[1:]]

    async def body() -> None:
        seen: list[tuple[str, str | None]] = []
        all_seen = asyncio.Event()
        halfway = asyncio.Event()

        def told(key: str, value: str | None) -> None:
            seen.append((key, value))
            if len(seen) == writes // 3:
                halfway.set()
            if len(seen) >= writes:
                all_seen.set()

        async with (
            world(cluster.endpoints, "watcher") as watcher,
            world(others, "writer") as writer,
        ):
            assert watcher.endpoint == victim.endpoint
            stop = await watcher.watch("/test/count/", told, prefix=True)

            async def kill_on_the_event() -> None:
                await halfway.wait()  # the watcher has seen a third of the writes
                await asyncio.to_thread(victim.kill)

            killer = asyncio.create_task(kill_on_the_event())
            for i in range(writes):
                await writer.set(f"/test/count/{i:04}", str(i))
            await asyncio.wait_for(killer, BOUND)
            await asyncio.wait_for(all_seen.wait(), BOUND)
            stop()
            assert not victim.alive
            assert seen == [(f"/test/count/{i:04}", str(i)) for i in range(writes)]
            # the agent goes on, on another member
            assert watcher.endpoint != victim.endpoint
            await watcher.set(keys.host_key("watcher", "after"), "yes")
            assert await writer.get(keys.host_key("watcher", "after")) == "yes"

    run(body)


def test_the_session_outlives_the_member_it_was_kept_alive_through(
    cluster: EtcdCluster,
) -> None:
    victim = cluster.members[0]

    async def body() -> None:
        async with (
            world(cluster.endpoints, "agent") as agent,
            world([m.endpoint for m in cluster.members[1:]], "observer") as observer,
        ):
            assert agent.endpoint == victim.endpoint
            await agent.set(keys.host_key("agent", "leased"), "1", lease=True)
            gone = asyncio.Event()
            stop = await observer.watch(
                keys.host_prefix("agent"),
                lambda k, v: gone.set() if v is None else None,
                prefix=True,
            )
            victim.kill()
            for _ in range(6):  # two TTLs of keepalives, through the other members
                await asyncio.wait_for(agent.wait_keepalive(), BOUND)
            stop()
            assert not gone.is_set()
            assert agent.endpoint != victim.endpoint
            assert (await observer.members()).get("agent") == keys.STATUS_ALIVE
            assert await observer.get(keys.host_key("agent", "leased")) == "1"

    run(body)


class Agent:
    """``tests/world/etcd_agent.py`` in its own process."""

    def __init__(self, endpoints: list[str], hostname: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.world.etcd_agent",
                ",".join(endpoints),
                hostname,
                str(TTL),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    async def holding(self) -> None:
        """Until the agent says it holds the lock (it has written its keys before)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), BOUND)
        assert line == "holding\n", line

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=BOUND)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()


def test_a_killed_agent_s_leased_keys_vanish_within_the_ttl_and_durable_ones_stay(
    cluster: EtcdCluster,
) -> None:
    async def body() -> None:
        victim = Agent(cluster.endpoints, "victim")
        try:
            async with world(cluster.endpoints, "observer") as observer:
                await victim.holding()
                assert (await observer.members()).get("victim") == keys.STATUS_ALIVE
                gone: dict[str, float] = {}
                all_gone = asyncio.Event()
                leased = {keys.alive_key("victim"), keys.host_key("victim", "leased")}

                def told(key: str, value: str | None) -> None:
                    if value is None and key in leased:
                        gone[key] = time.monotonic()
                        if set(gone) == leased:
                            all_gone.set()

                stop = await observer.watch(keys.host_prefix("victim"), told, prefix=True)
                killed = time.monotonic()
                victim.kill()
                await asyncio.wait_for(all_gone.wait(), BOUND)
                stop()
                # etcd checks expiry every 500 ms: within the TTL, plus that, plus slack
                assert max(gone.values()) - killed < TTL + 1.5
                assert "victim" not in await observer.members()
                assert await observer.get(keys.host_key("victim", "durable")) == "for good"
        finally:
            victim.close()

    run(body)


def test_a_lock_held_by_an_agent_that_dies_passes_to_the_next_within_the_ttl(
    cluster: EtcdCluster,
) -> None:
    async def body() -> None:
        holder = Agent(cluster.endpoints, "holder")
        try:
            async with world(cluster.endpoints, "next") as waiter:
                await holder.holding()
                taken = asyncio.Event()
                in_line = asyncio.Event()
                stop = await waiter.watch(
                    keys.lock_prefix("deploy"),
                    lambda k, v: in_line.set() if v is not None else None,
                    prefix=True,
                )

                async def take() -> None:
                    async with waiter.lock("deploy"):
                        taken.set()

                task = asyncio.create_task(take())
                # the holder's key was there before: this is the waiter's, in line behind it
                await asyncio.wait_for(in_line.wait(), BOUND)
                stop()
                # the waiter has read who holds the lock once its key is there; one more
                # round trip to etcd after that and it would have been in, were it free
                await waiter.get(keys.alive_key("holder"))
                assert not taken.is_set(), "the lock was taken while its holder lived"
                killed = time.monotonic()
                holder.kill()
                await asyncio.wait_for(task, BOUND)
                assert time.monotonic() - killed < TTL + 1.5
        finally:
            holder.close()

    run(body)


def test_a_watch_resumed_past_a_compaction_is_told_the_current_values(
    cluster: EtcdCluster,
) -> None:
    victim = cluster.members[0]
    others = [m.endpoint for m in cluster.members[1:]]
    prefix = "/test/compacted/"

    async def body() -> None:
        seen: dict[str, str | None] = {}
        caught_up = asyncio.Event()
        wanted = {f"{prefix}k{i}": str(i) for i in range(20)}

        def told(key: str, value: str | None) -> None:
            seen[key] = value
            if all(seen.get(k) == v for k, v in wanted.items()):
                caught_up.set()

        async with (
            world(cluster.endpoints, "watcher") as watcher,
            world(others, "writer") as writer,
        ):
            await writer.set(f"{prefix}before", "the watch began")
            stop = await watcher.watch(prefix, told, prefix=True)
            assert watcher.endpoint == victim.endpoint
            os.kill(victim.pid, signal.SIGSTOP)  # the watcher's member hears nothing more
            for key, value in wanted.items():
                await writer.set(key, value)
            compact(others[0])  # and etcd forgets those writes' history
            victim.kill()  # the watch reopens elsewhere, from a compacted revision
            await asyncio.wait_for(caught_up.wait(), BOUND)
            stop()
            # only a re-read tells a key written before the watch began: it was one
            assert seen[f"{prefix}before"] == "the watch began"

    run(body)


def test_with_every_member_down_a_request_fails_naming_them_and_the_world_reconnects(
    cluster: EtcdCluster,
) -> None:
    from convergent.world.base import WorldError

    async def body() -> None:
        async with world(cluster.endpoints, "agent", retry_for=1.0) as agent:
            seen = asyncio.Queue[tuple[str, str | None]]()
            stop = await agent.watch(
                "/test/back/", lambda k, v: seen.put_nowait((k, v)), prefix=True
            )
            await asyncio.to_thread(cluster.kill_all)
            with pytest.raises(WorldError) as info:
                await agent.set("/test/back/during", "x")
            for endpoint in cluster.endpoints:
                assert endpoint in str(info.value)
            await asyncio.to_thread(cluster.restart_all)
            await agent.set("/test/back/after", "y")  # the same world, reconnected
            assert await asyncio.wait_for(seen.get(), BOUND) == ("/test/back/after", "y")
            stop()
            for _ in range(3):  # the session is kept alive again
                await asyncio.wait_for(agent.wait_keepalive(), BOUND)
            assert (await agent.members()).get("agent") == keys.STATUS_ALIVE

    run(body)


def test_a_session_whose_lease_was_lost_is_renewed_and_its_leased_keys_written_again(
    cluster: EtcdCluster,
) -> None:
    from tests.etcd_support import etcdctl

    async def body() -> None:
        async with (
            world(cluster.endpoints, "agent") as agent,
            world(cluster.endpoints, "observer") as observer,
        ):
            leased = keys.host_key("agent", "leased")
            await agent.set(leased, "1", lease=True)
            events: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
            stop = await observer.watch(
                keys.host_prefix("agent"), lambda k, v: events.put_nowait((k, v)), prefix=True
            )
            got = etcdctl(cluster.endpoints[1], "get", keys.alive_key("agent"), "-w", "json")
            lease = json.loads(got)["kvs"][0]["lease"]
            etcdctl(cluster.endpoints[1], "lease", "revoke", f"{lease:x}")  # as if expired
            told: list[tuple[str, str | None]] = []
            back = {(keys.alive_key("agent"), keys.STATUS_ALIVE), (leased, "1")}
            while not back <= set(told[2:]):
                told.append(await asyncio.wait_for(events.get(), BOUND))
            stop()
            assert set(told[:2]) == {(keys.alive_key("agent"), None), (leased, None)}
            assert (await observer.members()).get("agent") == keys.STATUS_ALIVE
            renewed = etcdctl(cluster.endpoints[1], "get", leased, "-w", "json")
            assert json.loads(renewed)["kvs"][0]["lease"] not in (0, lease)

    run(body)


def test_no_watch_event_is_lost_when_the_member_the_agent_talks_to_hangs(
    cluster: EtcdCluster,
) -> None:
    """A member that stops answering (SIGSTOP: no reset, as behind a partition) is left
    when a request to it times out; the watch resumes elsewhere from its revision."""
    victim = cluster.members[0]
    others = [m.endpoint for m in cluster.members[1:]]
    writes = 50

    async def body() -> None:
        seen: list[tuple[str, str | None]] = []
        all_seen = asyncio.Event()

        def told(key: str, value: str | None) -> None:
            seen.append((key, value))
            if len(seen) >= writes:
                all_seen.set()

        async with (
            world(cluster.endpoints, "watcher") as watcher,
            world(others, "writer") as writer,
        ):
            stop = await watcher.watch("/test/hang/", told, prefix=True)
            assert watcher.endpoint == victim.endpoint
            os.kill(victim.pid, signal.SIGSTOP)
            try:
                for i in range(writes):
                    await writer.set(f"/test/hang/{i:03}", str(i))
                await asyncio.wait_for(all_seen.wait(), BOUND)
            finally:
                os.kill(victim.pid, signal.SIGCONT)
            stop()
            assert seen == [(f"/test/hang/{i:03}", str(i)) for i in range(writes)]
            assert watcher.endpoint != victim.endpoint

    run(body)
