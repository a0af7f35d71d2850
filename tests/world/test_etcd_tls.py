"""The etcd world over mutual TLS: with the cluster's CA and a client certificate it
works; without the certificate, or trusting another CA, it fails with an error that
names the endpoint, and writes nothing. Certificates are made with openssl here."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.world import keys
from convergent.world.base import WorldError
from tests.etcd_support import EtcdMember, etcd_member, require_etcd

BOUND = 20.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=BOUND)


def _ca(where: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
        "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip


def _cert(where: Path, name: str, ca: str, usage: str) -> None:
    ext = where / f"{name}.ext"
    ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", str(ext),
        cwd=where,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("pki")
    where.chmod(0o700)
    _ca(where, "ca")
    _ca(where, "other-ca")
    _cert(where, "member", "ca", "serverAuth,clientAuth")
    _cert(where, "agent", "ca", "clientAuth")
    return where


@pytest.fixture(scope="module")
def member(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    require_etcd()
    pytest.importorskip("aetcd", reason="the etcd world needs aetcd (make test installs it)")
    tls = [
        f"--cert-file={pki / 'member.pem'}",
        f"--key-file={pki / 'member.key'}",
        f"--trusted-ca-file={pki / 'ca.pem'}",
        "--client-cert-auth",
        f"--peer-cert-file={pki / 'member.pem'}",
        f"--peer-key-file={pki / 'member.key'}",
        f"--peer-trusted-ca-file={pki / 'ca.pem'}",
        "--peer-client-cert-auth",
    ]
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
