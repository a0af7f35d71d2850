"""The etcd member an agent runs: started as its child, private, mutually authenticated,
dying with the agent; clear errors when it cannot start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convergent.world import tls
from convergent.world.cluster import ClusterError, Member, MemberSpec, discover, member_status
from tests.cluster.support import fast_etcd, free_ports, needs_etcd, needs_tls

pytestmark = [needs_etcd, needs_tls]
__all__ = ["fast_etcd"]

BOUND = 20.0


def _spec(state: Path, name: str = "a", ports: list[int] | None = None, **kw: object) -> MemberSpec:
    client, peer = ports or free_ports(2)
    scheme = "http" if kw.get("insecure") else "https"
    client_url, peer_url = f"{scheme}://127.0.0.1:{client}", f"{scheme}://127.0.0.1:{peer}"
    files = (
        None
        if kw.get("insecure")
        else tls.member_files(str(state), name, [client_url, peer_url], make_ca=True)
    )
    initial = kw.get("initial") or {name: (peer_url,)}
    return MemberSpec(
        name,
        str(state / "etcd"),
        (client_url,),
        (peer_url,),
        initial,
        files,  # type: ignore[arg-type]
    )


def test_member_serves_only_clients_with_a_certificate_of_the_cluster_ca(
    tmp_path: Path, fast_etcd: None
) -> None:
    spec = _spec(tmp_path / "a")
    other = tls.member_files(str(tmp_path / "other"), "b", [], make_ca=True)

    async def main() -> None:
        member = Member(spec, str(tmp_path / "a"))
        await member.start(BOUND)
        try:
            url = spec.client_urls[0]
            assert await discover([url], spec.tls) == [url]
            status = await member_status(url, spec.tls)
            assert status["leader"] == status["id"] != 0
            with pytest.raises(ClusterError, match="not from our cluster CA"):
                await discover([url], other)
            # The CA trusted, but no client certificate: refused by etcd.
            assert spec.tls is not None
            context = ssl.create_default_context(cafile=spec.tls.ca)
            port = int(url.rsplit(":", 1)[1])
            with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
                await asyncio.to_thread(_handshake_and_read, port, context)
        finally:
            await member.aclose()
        assert not member.running

    asyncio.run(main())


def _handshake_and_read(port: int, context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        if not s.recv(1024):
            raise ConnectionResetError("closed without an answer")


def test_keys_and_data_are_private(tmp_path: Path, fast_etcd: None) -> None:
    spec = _spec(tmp_path)

    async def main() -> None:
        member = Member(spec, str(tmp_path))
        await member.start(BOUND)
        await member.aclose()

    asyncio.run(main())
    for directory in ("tls", "etcd"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700
    for name in ("ca.key", "a.key"):
        assert stat.S_IMODE((tmp_path / "tls" / name).stat().st_mode) == 0o600


def test_a_port_in_use_is_named_with_the_options_that_change_it(
    tmp_path: Path, fast_etcd: None
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    spec = _spec(tmp_path, ports=[free_ports(1)[0], taken.getsockname()[1]])

    async def main() -> None:
        member = Member(spec, str(tmp_path))
        with pytest.raises(ClusterError) as caught:
            await member.start(BOUND)
        text = str(caught.value)
        assert f"127.0.0.1:{taken.getsockname()[1]} is in use" in text
        assert "--peer-urls" in text
        assert not member.running

    try:
        asyncio.run(main())
    finally:
        taken.close()


def test_missing_etcd_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    async def main() -> None:
        with pytest.raises(ClusterError, match="apt-get install etcd-server"):
            await Member(spec, str(tmp_path)).start(BOUND)

    asyncio.run(main())


def test_a_member_without_its_majority_fails_within_the_bound(
    tmp_path: Path, fast_etcd: None
) -> None:
    lonely_peer = free_ports(1)[0]
    ports = free_ports(2)
    initial = {
        "a": (f"https://127.0.0.1:{ports[1]}",),
        "b": (f"https://127.0.0.1:{lonely_peer}",),
    }
    spec = _spec(tmp_path, ports=ports, initial=initial)

    async def main() -> None:
        member = Member(spec, str(tmp_path))
        with pytest.raises(ClusterError, match="did not serve clients within 1 s"):
            await member.start(1.0)
        assert not member.running

    asyncio.run(main())


AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from convergent.world.cluster import Member, MemberSpec
    from convergent.world.tls import TLSFiles

    async def main():
        spec = MemberSpec(sys.argv[1], sys.argv[2], (sys.argv[3],), (sys.argv[4],),
                          {sys.argv[1]: (sys.argv[4],)}, None)
        member = Member(spec, sys.argv[5])
        await member.start(20)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def _children(state: Path) -> list[int]:
    directory = state / "children"
    if not directory.exists():
        return []
    return [int(name.split("-")[0]) for name in os.listdir(directory)]


def test_the_member_dies_with_its_agent_killed_by_sigkill(tmp_path: Path, fast_etcd: None) -> None:
    client, peer = free_ports(2)
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AGENT,
            "a",
            str(tmp_path / "etcd"),
            f"http://127.0.0.1:{client}",
            f"http://127.0.0.1:{peer}",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline() == "ready\n"  # bounded by the agent's own 20 s
        (pid,) = _children(tmp_path)
        pidfd = os.pidfd_open(pid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=BOUND)
        # The death signal: the member goes at once, nobody reaps it but the kernel's
        # parent of orphans, so wait on its pidfd becoming readable.
        import select

        ready, _, _ = select.select([pidfd], [], [], BOUND)
        os.close(pidfd)
        assert ready, f"etcd {pid} outlived its agent"
    finally:
        agent.kill()
        agent.wait(timeout=BOUND)
        if agent.stdout is not None:
            agent.stdout.close()
    # The next agent on this state directory clears the record the killed one left.
    from convergent.host.process import reap_orphans

    reap_orphans(str(tmp_path))
    assert _children(tmp_path) == []


def test_a_join_token_gives_a_host_what_it_needs_to_be_a_client(
    tmp_path: Path, fast_etcd: None
) -> None:
    spec = _spec(tmp_path / "a")
    token = tls.make_token(str(tmp_path / "a"), "b", [])
    assert token.startswith(tls.TOKEN_PREFIX)
    with pytest.raises(tls.TLSError, match="for host 'b', this is 'c'"):
        tls.accept_token(str(tmp_path / "c"), token, "c")
    with pytest.raises(tls.TLSError, match="damaged"):
        tls.accept_token(str(tmp_path / "b"), token[:-12], "b")
    files = tls.accept_token(str(tmp_path / "b"), token, "b")
    assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    assert json.loads(json.dumps(files.__dict__))  # plain paths

    async def main() -> None:
        member = Member(spec, str(tmp_path / "a"))
        await member.start(BOUND)
        try:
            assert await discover(spec.client_urls, files) == list(spec.client_urls)
        finally:
            await member.aclose()

    asyncio.run(main())


def test_an_insecure_member_speaks_plain_http(tmp_path: Path, fast_etcd: None) -> None:
    spec = _spec(tmp_path, insecure=True)

    async def main() -> None:
        member = Member(spec, str(tmp_path))
        await member.start(BOUND)
        try:
            assert await discover(spec.client_urls, None) == list(spec.client_urls)
        finally:
            await member.aclose()

    asyncio.run(main())
    assert not (tmp_path / "tls").exists()


def test_a_member_whose_log_is_long_before_it_is_ready_is_still_seen_ready(
    tmp_path: Path, fast_etcd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that waits long for its majority logs more than the agent reads of it
    (``QUIET_LOG``); past that the agent asks the member. Here that limit is 1 byte, and
    the second member starts only once the first is waiting."""
    from convergent.world import cluster
    from tests.cluster.members import member_process

    monkeypatch.setattr(cluster, "QUIET_LOG", 1)
    ports = free_ports(4)
    peers = {"a": f"https://127.0.0.1:{ports[1]}", "b": f"https://127.0.0.1:{ports[3]}"}
    spec = _spec(tmp_path / "a", ports=ports[:2], initial={h: (u,) for h, u in peers.items()})
    tls.make_token(str(tmp_path / "a"), "b", [])  # same CA for b's member
    (tmp_path / "b" / "tls").mkdir(parents=True)
    for name in ("ca.crt", "ca.key"):
        (tmp_path / "b" / "tls" / name).write_bytes((tmp_path / "a" / "tls" / name).read_bytes())

    async def main() -> None:
        member = Member(spec, str(tmp_path / "a"))
        starting = asyncio.create_task(member.start(BOUND))
        initial = {h: [u] for h, u in peers.items()}
        with contextlib.ExitStack() as stack:
            # b's start waits for a's member (a majority of two): enter it in a thread.
            b = member_process(tmp_path / "b", "b", ports[2], ports[3], initial=initial)
            await asyncio.gather(starting, asyncio.to_thread(stack.enter_context, b))
            assert member._asking is not None  # readiness came from asking
            await member.aclose()

    asyncio.run(main())
