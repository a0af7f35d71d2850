"""``convergent run --remote``: bootstrap an agent on every remote host, give them one
world, stream their reports, end with one exit code.

For each host, in parallel (at most ``cconns`` connecting and bootstrapping at once):
connect (:mod:`convergent.remote.ssh`), probe and write the policy
(:mod:`convergent.remote.bootstrap`), copy the single file unless the host has it,
reverse-forward the world's port, start the agent, stream its lines (``report(host,
line, error)``), and read its exit status. A host that cannot be reached, trusted or
bootstrapped, or whose connection is lost, is reported by name; the others go on.

The world (:class:`World` here): an etcd member this run starts on loopback, in
``STATE_DIR`` (TLS; its data is the run's only). Each host gets a join token (its own
certificate and etcd role) and reaches the member through its SSH connection: ``ssh -R``
from the host's ``127.0.0.1:PORT`` to the member, so a host needs only its SSH port open.
The initiator is no agent of that world: the remote agents wait only for each other.

Live: while the agents run, saving a local policy file copies it again; the remote
agent reloads it as it reloads a saved policy (a diff: what converged is not re-run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convergent.errors import ConvergentError
from convergent.remote.bootstrap import (
    MIN_PYTHON,
    MISSING,
    Payload,
    copy_script,
    files_script,
    probe_input,
    start_script,
)
from convergent.remote.ssh import SshOptions, connect
from convergent.remote.urls import RemoteError, Target

if TYPE_CHECKING:
    import asyncssh

__all__ = ["ADMIN", "Assignment", "Fleet", "FleetConfig", "HostResult", "Report", "World"]

ADMIN = "initiator"  # the run's own name in its world (it holds the CA; no agent)
Report = Callable[[str, str, bool], None]  # host, line, is an error
STOP_BOUND = 15.0  # seconds the agents get to stop after Ctrl-C or a closed stdin
QUIET = 0.05  # seconds a saved policy file must stay quiet before it is copied again


@dataclass(frozen=True)
class Assignment:
    """A host and the policy file it runs."""

    target: Target
    policy: str


@dataclass(frozen=True)
class FleetConfig:
    assignments: list[Assignment]
    ssh: SshOptions = field(default_factory=SshOptions)
    cconns: int = 8
    caching: bool = True
    converged_timeout: float | None = None
    detach: bool = False
    agent_args: tuple[str, ...] = ()  # passed to every agent (--noop, --diff)
    world: bool = True


@dataclass
class HostResult:
    """How host ``name`` ended: its agent's exit status (None: it never ran to the end),
    the error that stopped it, the bytes copied to it."""

    name: str
    status: int | None = None
    error: str | None = None
    copied: int = 0
    detached_pid: int | None = None


class World:
    """The run's etcd member on loopback, and a join token per host."""

    def __init__(self, state_dir: str, admin: str, log: Callable[[str], None]) -> None:
        self.state_dir = state_dir
        self.admin = admin
        self._log = log
        self.port = 0
        self._member: Any = None

    async def start(self, hosts: list[str]) -> dict[str, str]:
        """Start the member, give ``hosts`` their roles; each host's join token."""
        from convergent.world import tls
        from convergent.world.cluster import Member, MemberSpec, grant_hosts

        client, peer = _free_ports(2)
        self.port = client
        client_url, peer_url = f"https://127.0.0.1:{client}", f"https://127.0.0.1:{peer}"
        files = await asyncio.to_thread(
            tls.member_files, self.state_dir, self.admin, [client_url, peer_url], make_ca=True
        )
        data = os.path.join(self.state_dir, "etcd")
        shutil.rmtree(data, ignore_errors=True)  # the world of one run: no old members
        spec = MemberSpec(
            self.admin, data, (client_url,), (peer_url,), {self.admin: (peer_url,)}, files
        )
        self._member = Member(spec, self.state_dir, self._log)
        await self._member.start()
        tokens = {h: await asyncio.to_thread(tls.make_token, self.state_dir, h, []) for h in hosts}
        await grant_hosts([client_url], files, self.admin, hosts)
        return tokens

    async def aclose(self) -> None:
        if self._member is not None:
            await self._member.aclose()


def _free_ports(count: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Fleet:
    """One ``run --remote``: :meth:`run` returns every host's :class:`HostResult`."""

    def __init__(self, config: FleetConfig, payload: Callable[[], Payload], report: Report) -> None:
        """``payload``: finds or builds the single file; called in a thread at the start
        of :meth:`run`, while the connections are made."""
        self.config = config
        self._payload_source = payload
        self._payload: asyncio.Future[Payload] | None = None
        self.report = report
        self._slots = asyncio.Semaphore(config.cconns)
        self._stopping = asyncio.Event()
        self._conns: dict[str, asyncssh.SSHClientConnection] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._watcher: Any = None  # one inotify descriptor for every policy followed

    def stop(self) -> None:
        """Ctrl-C: close every agent's stdin (they stop) and end."""
        self._stopping.set()

    async def run(self, world: World | None) -> list[HostResult]:
        self._payload = asyncio.ensure_future(asyncio.to_thread(self._payload_source))
        tokens: dict[str, str] = {}
        names = [a.target.name for a in self.config.assignments]
        if world is not None:
            tokens = await world.start(names)
        for a in self.config.assignments:
            self._ready[a.target.name] = asyncio.Event()
        tasks = [
            asyncio.create_task(self._host(a, tokens.get(a.target.name), world))
            for a in self.config.assignments
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            if not self._payload.done():
                self._payload.cancel()
            for conn in self._conns.values():
                conn.close()
            if self._watcher is not None:
                self._watcher.close()

    async def _connection(self, target: Target) -> asyncssh.SSHClientConnection:
        tunnel = None
        if target.via is not None:
            tunnel = await self._via(target.via)
        conn = await connect(target, self.config.ssh, tunnel)
        return conn

    async def _via(self, via: Target) -> asyncssh.SSHClientConnection:
        """The connection of the host others are reached through (made once)."""
        if via.name in self._ready:  # one of the hosts of the run: wait for its connection
            await self._ready[via.name].wait()
        if via.name not in self._conns:
            self._conns[via.name] = await connect(via, self.config.ssh)
        return self._conns[via.name]

    async def _host(self, a: Assignment, token: str | None, world: World | None) -> HostResult:
        target = a.target
        result = HostResult(target.name)
        try:
            async with self._slots:
                try:
                    conn = await self._connection(target)
                finally:
                    self._ready[target.name].set()
                self._conns[target.name] = conn
            await self._agent(conn, a, token, world, result)
        except RemoteError as exc:
            result.error = str(exc)
        except ConvergentError as exc:  # the single file cannot be built, the world started
            result.error = f"{target.name}: {exc}"
        except OSError as exc:
            result.error = f"{target.name}: {exc.strerror or exc}"
        except Exception as exc:  # asyncssh's: the connection was lost, the channel refused
            result.error = f"{target.name}: connection lost ({_reason(exc)})"
        if result.error is not None:
            self.report(target.name, result.error, True)
        return result

    def _files(self, a: Assignment, token: str | None) -> dict[str, str]:
        with open(a.policy, encoding="utf-8") as f:
            files = {f"policy/{os.path.basename(a.policy)}": strip_remote(f.read())}
        if token is not None:
            files["join-token"] = token
        return files

    async def _agent(
        self,
        conn: asyncssh.SSHClientConnection,
        a: Assignment,
        token: str | None,
        world: World | None,
        result: HostResult,
    ) -> None:
        """Bootstrap and start the agent in one round trip; when the host lacks the
        single file, copy it and start again."""
        name = a.target.name
        argv = ["run", f"policy/{os.path.basename(a.policy)}", "--hostname", name]
        argv += ["--state-dir", "state", *self.config.agent_args]
        if self.config.converged_timeout is not None:
            argv += ["--converged-timeout", f"{self.config.converged_timeout:g}"]
        if world is not None and token is not None:
            listener = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", world.port)
            argv += ["--etcd-endpoints", f"https://127.0.0.1:{listener.get_port()}"]
            argv += ["--join-token", "join-token"]
        files = probe_input(self._files(a, token)).decode()
        assert self._payload is not None
        try:
            payload = await self._payload
        except Exception as exc:  # dist's DistError (no ConvergentError), OSError
            raise RemoteError(f"{name}: the single file cannot be built here: {exc}") from None
        fresh = not self.config.caching
        following = None if self.config.detach else asyncio.create_task(self._follow(conn, a))
        try:
            while True:
                script, marker = start_script(
                    payload, name, argv, fresh=fresh, detach=self.config.detach
                )
                probe: dict[str, str] = {}
                status = await self._run(conn, name, script, files, marker, probe, result)
                if result.status is not None or result.detached_pid is not None:
                    return
                _refuse_python(name, probe, status)
                if status != MISSING or not probe.get("cached") or result.copied:
                    raise RemoteError(f"{name}: its agent did not start (status {status})")
                await self._copy(conn, name, payload, result)
                fresh = False
        finally:
            if following is not None:
                following.cancel()

    async def _copy(
        self, conn: asyncssh.SSHClientConnection, name: str, payload: Payload, result: HostResult
    ) -> None:
        data = await asyncio.to_thread(payload.path.read_bytes)
        copied = await conn.run(copy_script(payload.digest), input=data, encoding=None)
        if copied.exit_status != 0:
            raise RemoteError(f"{name}: could not copy convergent.pyz to the host{_stderr(copied)}")
        result.copied = len(data)

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        name: str,
        script: str,
        files: str,
        marker: str,
        probe: dict[str, str],
        result: HostResult,
    ) -> int | None:
        """Run the start script to its end; its exit status."""
        process = await conn.create_process(script, encoding="utf-8", errors="replace")
        process.stdin.write(files)
        try:
            errors = asyncio.create_task(self._lines(process.stderr, name, True, None, result))
            await self._lines(process.stdout, name, False, marker, result, probe)
            await errors
        finally:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait_closed(), STOP_BOUND)
        status: int | None = process.exit_status
        return status

    async def _lines(
        self,
        stream: Any,
        name: str,
        error: bool,
        marker: str | None,
        result: HostResult,
        probe: dict[str, str] | None = None,
    ) -> None:
        stop = asyncio.create_task(self._stopping.wait()) if marker is not None else None
        try:
            while True:
                read = asyncio.create_task(stream.readline())
                waits = {read} if stop is None else {read, stop}
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if stop is not None and stop in done and read not in done:
                    stream.channel.write_eof()  # the agent stops; keep reading its lines
                    stop = None
                    done, _ = await asyncio.wait({read})
                line = read.result()
                if not line:
                    return
                line = line.rstrip("\n")
                if probe is not None and "cached" not in probe:
                    word, _, rest = line.partition(" ")
                    if word in ("python", "wrote", "cached"):
                        probe[word] = rest
                        if word == "cached" and rest == "True":
                            self.report(name, f"bootstrap: {result.copied} bytes copied", False)
                        continue
                if marker is not None and line.startswith(marker + " "):
                    word = line[len(marker) + 1 :]
                    if word.startswith("detached "):
                        result.detached_pid = int(word.split()[1])
                    else:
                        result.status = int(word)
                    stream.channel.write_eof()
                    continue
                self.report(name, line, error)
        finally:
            if stop is not None:
                stop.cancel()

    async def _follow(self, conn: asyncssh.SSHClientConnection, a: Assignment) -> None:
        """Copy the policy again each time its local file is saved with new content."""
        from convergent.resources.fswatch import FsWatcher

        path = _absolute(a.policy)
        saved = asyncio.Event()
        if self._watcher is None:
            self._watcher = FsWatcher()
        try:
            unsubscribe = self._watcher.watch(path, saved.set)
        except OSError as exc:
            self.report(a.target.name, f"cannot follow {a.policy} ({exc}): not copied again", True)
            return
        last = self._files(a, None)
        try:
            while True:
                await saved.wait()
                while saved.is_set():
                    saved.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(saved.wait(), QUIET)
                try:
                    files = self._files(a, None)
                except OSError:
                    continue  # mid-rename: the next event brings it
                if files == last:
                    continue
                last = files
                done = await conn.run(
                    files_script(a.target.name), input=probe_input(files).decode()
                )
                what = "copied again" if "wrote" in str(done.stdout) else "NOT copied"
                self.report(a.target.name, f"policy {what}: {a.policy}", "NOT" in what)
        finally:
            unsubscribe()


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def strip_remote(text: str) -> str:
    """A policy without its top-level ``remote:`` line (commented out, so that line
    numbers stay): the host it names has it already."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("remote:"):
            lines[i] = "#" + line
    return "\n".join(lines)


def _refuse_python(name: str, probe: dict[str, str], status: int | None) -> None:
    """RemoteError when the probe found no python3, or one too old."""
    need = ".".join(map(str, MIN_PYTHON))
    version = probe.get("python", "")
    if version in ("", "none"):
        raise RemoteError(
            f"{name}: no python3 on the host (convergent needs python3 >= {need} there "
            "and nothing else): install it, e.g. apt-get install python3"
        )
    major, minor, python = [*version.split(" ", 2), "", ""][:3]
    if (int(major), int(minor)) < MIN_PYTHON:
        raise RemoteError(
            f"{name}: {python or 'python3'} is Python {major}.{minor}; convergent needs "
            f"{need} or newer on the host: install a newer python3"
        )


def _stderr(done: Any) -> str:
    text = str(done.stderr or "").strip()
    return f": {text.splitlines()[-1]}" if text else ""


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__)
