"""etcd members run the way an agent runs one (:class:`~convergent.world.cluster.Member`,
in a process of their own), for tests that need a cluster without agents."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemberProcess", "member_process"]

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from convergent.world import tls
    from convergent.world.cluster import Member, MemberSpec

    async def main():
        name, state, client, peer, secure, initial = json.loads(sys.argv[1])
        files = None
        if secure:
            files = tls.member_files(state, name, [client, peer], make_ca=True)
        spec = MemberSpec(name, state + "/etcd", (client,), (peer,),
                          {k: tuple(v) for k, v in initial.items()}, files)
        member = Member(spec, state)
        await member.start(20)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@dataclass
class MemberProcess:
    proc: subprocess.Popen[str]
    client_url: str
    state: Path

    def kill(self) -> None:
        """kill -9 the process holding the member (the member dies with it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


@contextlib.contextmanager
def member_process(
    state: Path,
    name: str,
    client_port: int,
    peer_port: int,
    *,
    secure: bool = True,
    initial: dict[str, list[str]] | None = None,
) -> Iterator[MemberProcess]:
    """A single member (TLS unless ``secure`` is False; CA made in ``state/tls``),
    ready when this yields."""
    import json

    scheme = "https" if secure else "http"
    client = f"{scheme}://127.0.0.1:{client_port}"
    peer = f"{scheme}://127.0.0.1:{peer_port}"
    arg = json.dumps([name, str(state), client, peer, secure, initial or {name: [peer]}])
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, arg], stdout=subprocess.PIPE, text=True)
    member = MemberProcess(proc, client, state)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the script gives up after 20 s
        assert line == "ready\n", f"the member did not start: {line!r}"
        yield member
    finally:
        member.kill()
        if proc.stdout is not None:
            proc.stdout.close()
