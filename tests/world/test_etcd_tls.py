"""The etcd world over mutual TLS: with the cluster's CA and a client certificate it
works; without the certificate, or trusting another CA, it fails with an error that
names the endpoint, and writes nothing. Certificates: openssl (tests/etcd_support.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.world import keys
from convergent.world.base import WorldError
from tests.etcd_support import (
    EtcdMember,
    etcd_member,
    make_pki,
    openssl_ca,
    require_etcd,
    tls_member_args,
)

BOUND = 20.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = make_pki(tmp_path_factory.mktemp("pki"), ["agent"])
    openssl_ca(where, "other-ca")
    return where


@pytest.fixture(scope="module")
def member(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    tls = tls_member_args(pki)
    with etcd_member(tmp_path_factory.mktemp("etcd"), scheme="https", extra_args=tls) as m:
        yield m


def test_an_agent_with_the_cluster_ca_and_its_certificate_uses_the_world(
    pki: Path, member: EtcdMember
) -> None:
    from convergent.world.etcd import EtcdWorld, Tls

    tls = Tls(ca=pki / "ca.pem", cert=pki / "agent.pem", key=pki / "agent.key")

    async def main() -> None:
        async with EtcdWorld([member.endpoint], hostname="a", tls=tls, ttl=2) as world:
            seen = asyncio.Queue[tuple[str, str | None]]()
            stop = await world.watch(
                keys.host_prefix("a"), lambda k, v: seen.put_nowait((k, v)), prefix=True
            )
            await world.set(keys.kv_key("a", "port"), "8080")
            assert await asyncio.wait_for(seen.get(), BOUND) == (keys.kv_key("a", "port"), "8080")
            stop()
            assert (await world.members())["a"] == keys.STATUS_ALIVE

    asyncio.run(asyncio.wait_for(main(), BOUND))


@pytest.mark.parametrize("case", ["no client certificate", "another CA"])
def test_an_agent_the_cluster_does_not_trust_gets_a_clear_error_and_writes_nothing(
    pki: Path, member: EtcdMember, case: str
) -> None:
    from convergent.world.etcd import EtcdWorld, Tls

    good = Tls(ca=pki / "ca.pem", cert=pki / "agent.pem", key=pki / "agent.key")
    bad = (
        Tls(ca=pki / "ca.pem")
        if case == "no client certificate"
        else Tls(ca=pki / "other-ca.pem", cert=pki / "agent.pem", key=pki / "agent.key")
    )

    async def main() -> None:
        world = EtcdWorld([member.endpoint], hostname="intruder", tls=bad, retry_for=1.0)
        with pytest.raises(WorldError) as info:
            await world.start()
        await world.aclose()
        message = str(info.value)
        assert member.endpoint in message and "could not grant the session lease" in message
        async with EtcdWorld([member.endpoint], hostname="a", tls=good) as checker:
            assert "intruder" not in await checker.members()
            assert await checker.get_prefix(keys.host_prefix("intruder")) == {}

    asyncio.run(asyncio.wait_for(main(), BOUND))


def test_tls_settings_that_cannot_work_are_refused_before_connecting(pki: Path) -> None:
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    from convergent.world.etcd import EtcdWorld, Tls

    async def main() -> None:
        cases = [
            (["http://127.0.0.1:1"], Tls(ca=pki / "ca.pem"), "http://"),
            (["127.0.0.1:1"], Tls(ca=pki / "ca.pem", cert=pki / "agent.pem"), "needs its key"),
            (["127.0.0.1:1"], Tls(ca=pki / "missing.pem"), "missing.pem"),
            (["127.0.0.1"], None, "not host:port"),
        ]
        for endpoints, tls, says in cases:
            world = EtcdWorld(endpoints, hostname="a", tls=tls)
            with pytest.raises(WorldError, match=says):
                await world.start()
            await world.aclose()

    asyncio.run(main())
