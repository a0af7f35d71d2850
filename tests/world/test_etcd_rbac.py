"""etcd's RBAC holds each host to its own prefix: with auth on, host a writes under
/convergent/hosts/a/ and the locks, reads everything under /convergent/, and is refused
(with a clear error, nothing written) when it writes another host's key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.world import keys
from convergent.world.base import WorldError
from tests.etcd_support import EtcdMember, etcd_member, make_pki, require_etcd, tls_member_args

BOUND = 20.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), ["admin", "a", "b"])


@pytest.fixture(scope="module")
def member(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    args = tls_member_args(pki)
    with etcd_member(tmp_path_factory.mktemp("etcd"), scheme="https", extra_args=args) as m:
        yield m


def test_with_auth_on_a_host_writes_only_its_own_prefix_and_reads_the_others(
    pki: Path, member: EtcdMember
) -> None:
    from convergent.world.etcd import EtcdWorld, Tls
    from convergent.world.etcdauth import enable_auth, grant_host

    def tls(name: str) -> Tls:
        return Tls(ca=pki / "ca.pem", cert=pki / f"{name}.pem", key=pki / f"{name}.key")

    def agent(name: str) -> EtcdWorld:
        return EtcdWorld([member.endpoint], hostname=name, tls=tls(name), ttl=2, retry_for=2)

    async def main() -> None:
        async with agent("admin") as admin:
            for host in ("a", "b"):
                await grant_host(admin, host)
            await enable_auth(admin, "admin")
            await grant_host(admin, "a")  # again, with auth on: nothing changes
        async with agent("a") as a, agent("b") as b:
            await b.set(keys.kv_key("b", "port"), "9090")
            await a.set(keys.kv_key("a", "port"), "8080")
            assert await a.get(keys.kv_key("b", "port")) == "9090"
            assert set(await a.members()) >= {"a", "b"}
            seen = asyncio.Queue[tuple[str, str | None]]()
            stop = await a.watch(keys.HOSTS, lambda k, v: seen.put_nowait((k, v)), prefix=True)
            with pytest.raises(WorldError, match="permission denied") as info:
                await a.set(keys.kv_key("b", "port"), "hijacked")
            assert member.endpoint in str(info.value)
            with pytest.raises(WorldError, match="permission denied"):
                await a.delete(keys.alive_key("b"))
            with pytest.raises(WorldError, match="permission denied"):
                await a.set("/elsewhere", "x")
            await b.set(keys.kv_key("b", "port"), "9191")
            assert await asyncio.wait_for(seen.get(), BOUND) == (keys.kv_key("b", "port"), "9191")
            stop()
            assert await b.get(keys.kv_key("b", "port")) == "9191"
            async with a.lock("deploy"):
                pass

    asyncio.run(asyncio.wait_for(main(), BOUND * 2))
