"""The gateway's wire signs in to an etcd whose password authentication is on: requests,
watches and the session carry the token; a member that forgot it (restarted) gets a new
one and the watch goes on without a lost event; without a user or with a wrong password,
a clear error and nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.world import keys
from convergent.world.base import WorldError
from tests.etcd_support import EtcdCluster, etcd_cluster, etcdctl, require_etcd

BOUND = 20.0
ROOT = "--user=root:root-pw"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    require_etcd()
    with etcd_cluster(tmp_path, 1) as made:
        endpoint = made.members[0].endpoint
        for args in (
            ["user", "add", "root:root-pw"],
            ["role", "add", "root"],
            ["user", "grant-role", "root", "root"],
            ["user", "add", "alice:alice-pw"],
            ["role", "add", "convergent"],
            ["role", "grant-permission", "convergent", "--prefix=true", "readwrite", keys.ROOT],
            ["user", "grant-role", "alice", "convergent"],
            ["auth", "enable"],
        ):
            etcdctl(endpoint, *args)
        yield made


def test_a_user_signs_in_and_a_restarted_member_loses_no_event(cluster: EtcdCluster) -> None:
    from convergent.world.etcd import EtcdWorld

    member = cluster.members[0]
    key = keys.kv_key("alice", "n")

    async def main() -> None:
        world = EtcdWorld([member.endpoint], hostname="alice", user=("alice", "alice-pw"), ttl=3)
        async with world:
            seen: asyncio.Queue[str | None] = asyncio.Queue()
            stop = await world.watch(key, lambda k, v: seen.put_nowait(v))
            await world.set(key, "1")
            async with asyncio.timeout(BOUND):
                assert await seen.get() == "1"
            await asyncio.to_thread(cluster.restart, member)  # its tokens are gone
            await world.set(key, "2")
            assert await world.get(key) == "2"
            async with asyncio.timeout(BOUND):
                assert await seen.get() == "2"
            stop()

    asyncio.run(main())
    assert etcdctl(member.endpoint, ROOT, "get", key, "--print-value-only").strip() == "2"


@pytest.mark.parametrize(
    ("user", "said"),
    [(None, "user name is empty"), (("alice", "wrong"), "authentication failed")],
)
def test_without_a_user_or_with_a_wrong_password_a_clear_error_and_nothing_written(
    cluster: EtcdCluster, user: tuple[str, str] | None, said: str
) -> None:
    from convergent.world.etcd import EtcdWorld

    endpoint = cluster.members[0].endpoint

    async def main() -> None:
        world = EtcdWorld([endpoint], hostname="alice", user=user, wire="http", retry_for=2)
        with pytest.raises(WorldError, match=said):
            await world.start()
        await world.aclose()

    asyncio.run(main())
    assert etcdctl(endpoint, ROOT, "get", "--prefix", keys.ROOT, "--keys-only").strip() == ""
