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

Hosts behind a first-level host (``via``): the initiator connects only to the first
level, with its ssh agent forwarded there; once a first-level host is bootstrapped, its
relay (:mod:`convergent.remote.relay`) bootstraps the hosts behind it and writes their
lines up; their results come back the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convergent.errors import ConvergentError
from convergent.remote.bootstrap import (
    MISSING,
    Payload,
    check_python,
    copy_script,
    files_script,
    probe_input,
    relay_script,
    start_script,
)
from convergent.remote.relay import (
    Plan,
    Upstream,
    child_policy,
    decode,
    plan_files,
    relay_argv,
)
from convergent.remote.ssh import SshOptions, connect, known_lines
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
        self._watcher: Any = None  # one inotify descriptor for every policy followed
        self._behind: dict[str, list[Assignment]] = {}  # first-level host: hosts behind it
        self._ends: dict[str, asyncio.Future[HostResult]] = {}  # a host behind: its end
        self._probed: dict[str, asyncio.Event] = {}  # the probe wrote the files, found the file
        self._gates: dict[str, asyncio.Event] = {}  # set: start the agent (its hosts behind did)

    def stop(self) -> None:
        """Ctrl-C: close every agent's stdin (they stop) and end."""
        self._stopping.set()

    async def run(self, world: World | Upstream | None) -> list[HostResult]:
        self._payload = asyncio.ensure_future(asyncio.to_thread(self._payload_source))
        tokens: dict[str, str] = {}
        names = [a.target.name for a in self.config.assignments]
        if world is not None:
            tokens = await world.start(names)
        loop = asyncio.get_running_loop()
        for a in self.config.assignments:
            self._probed[a.target.name] = asyncio.Event()
            if a.target.via is not None:
                self._behind.setdefault(a.target.via.name, []).append(a)
                self._gates.setdefault(a.target.via.name, asyncio.Event())
                self._ends[a.target.name] = loop.create_future()
        for parent in set(self._behind) - set(names):  # cli/remote.py refuses it first
            self._fail(
                self._behind[parent], f"{parent}, which would bootstrap it, is no host of the run"
            )
        tasks = [
            asyncio.ensure_future(
                self._host(a, tokens, world) if a.target.via is None else self._ends[a.target.name]
            )
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

    def _fail(self, behind: list[Assignment], why: str) -> None:
        """End the hosts ``behind`` that have not ended, with ``why`` (reported)."""
        for child in behind:
            name = child.target.name
            end = self._ends[name]
            if not end.done():
                error = f"{name}: {why}"
                self.report(name, error, True)
                end.set_result(HostResult(name, error=error))

    async def _host(
        self, a: Assignment, tokens: dict[str, str], world: World | Upstream | None
    ) -> HostResult:
        target = a.target
        result = HostResult(target.name)
        behind = self._behind.get(target.name, [])
        try:
            options = self.config.ssh
            if behind:  # the relay logs in to the hosts behind with the initiator's agent
                agent = os.environ.get("SSH_AUTH_SOCK") or None
                options = dataclasses.replace(options, forward_agent=agent)
            async with self._slots:
                conn = await connect(target, options)
                self._conns[target.name] = conn
            await self._agent(conn, a, tokens, world, result)
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
        self._fail(behind, f"not reached: {target.name}, which bootstraps it, failed")
        return result

    def _files(self, a: Assignment, token: str | None) -> dict[str, str]:
        with open(a.policy, encoding="utf-8") as f:
            files = {f"policy/{os.path.basename(a.policy)}": strip_remote(f.read())}
        if token is not None:
            files["join-token"] = token
        return files

    def _relay_files(
        self, name: str, tokens: dict[str, str], port: int | None, payload: Payload
    ) -> dict[str, str]:
        """The relay's plan, known_hosts lines and policies, for the hosts behind ``name``."""
        behind = self._behind.get(name, [])
        policies = {}
        for child in behind:
            with open(child.policy, encoding="utf-8") as f:
                policies[child_policy(child.target.name, child.policy)] = strip_remote(f.read())
        plan = Plan(
            name,
            payload.digest,
            port,
            {c.target.name: tokens[c.target.name] for c in behind if c.target.name in tokens},
            {c.target.name: child_policy(c.target.name, c.policy) for c in behind},
        )
        return plan_files(plan, policies, known_lines([c.target for c in behind]))

    async def _agent(
        self,
        conn: asyncssh.SSHClientConnection,
        a: Assignment,
        tokens: dict[str, str],
        world: World | Upstream | None,
        result: HostResult,
    ) -> None:
        """Bootstrap and start the agent in one round trip; when the host lacks the
        single file, copy it and start again. With hosts behind it, its relay too."""
        name = a.target.name
        token = tokens.get(name)
        argv = ["run", f"policy/{os.path.basename(a.policy)}", "--hostname", name]
        argv += ["--state-dir", "state", *self.config.agent_args]
        if self.config.converged_timeout is not None:
            argv += ["--converged-timeout", f"{self.config.converged_timeout:g}"]
        port = None
        if world is not None and token is not None:
            listener = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", world.port)
            port = listener.get_port()
            argv += ["--etcd-endpoints", f"https://127.0.0.1:{port}"]
            argv += ["--join-token", "join-token"]
        assert self._payload is not None
        try:
            payload = await self._payload
        except Exception as exc:  # dist's DistError (no ConvergentError), OSError
            raise RemoteError(f"{name}: the single file cannot be built here: {exc}") from None
        files_of = self._files(a, token)
        relaying = None
        if self._behind.get(name):
            files_of.update(self._relay_files(name, tokens, port, payload))
            relaying = asyncio.create_task(self._relay(conn, name, payload))
        files = probe_input(files_of).decode()
        fresh = not self.config.caching
        following = None if self.config.detach else asyncio.create_task(self._follow(conn, a))
        try:
            await self._start(conn, name, argv, files, payload, fresh, result)
        except BaseException:
            if relaying is not None:
                relaying.cancel()
            raise
        finally:
            if following is not None:
                following.cancel()
        if relaying is not None:
            await relaying

    async def _start(
        self,
        conn: asyncssh.SSHClientConnection,
        name: str,
        argv: list[str],
        files: str,
        payload: Payload,
        fresh: bool,
        result: HostResult,
    ) -> None:
        """Run the start script, copying the single file first when the probe says so."""
        while True:
            gate = self._gates.get(name)
            script, marker = start_script(
                payload, name, argv, fresh=fresh, detach=self.config.detach, gated=gate is not None
            )
            probe: dict[str, str] = {}
            status = await self._run(conn, name, script, files, marker, probe, result)
            if result.status is not None or result.detached_pid is not None:
                return
            check_python(name, probe)
            if status != MISSING or not probe.get("cached") or result.copied:
                raise RemoteError(f"{name}: its agent did not start (status {status})")
            await self._copy(conn, name, payload, result)
            fresh = False

    async def _relay(self, conn: asyncssh.SSHClientConnection, name: str, payload: Payload) -> None:
        """Once host ``name`` has the single file, start its relay there; print the
        lines of the hosts behind it as theirs, and end them as the relay says."""
        behind = self._behind[name]
        mine = {c.target.name for c in behind}
        try:
            await self._probed[name].wait()
            await self._relay_run(conn, name, payload, behind, mine)
        finally:
            self._gates[name].set()

    async def _relay_run(
        self,
        conn: asyncssh.SSHClientConnection,
        name: str,
        payload: Payload,
        behind: list[Assignment],
        mine: set[str],
    ) -> None:
        config = self.config
        argv = relay_argv(
            [c.target for c in behind],
            cconns=config.cconns,
            caching=config.caching,
            accept_new=config.ssh.accept_new,
            converged_timeout=config.converged_timeout,
            detach=config.detach,
            agent_args=config.agent_args,
        )
        followers = (
            []
            if config.detach
            else [asyncio.create_task(self._follow(conn, c, parent=name)) for c in behind]
        )
        why = f"the relay on {name} ended without its report"
        try:
            process = await conn.create_process(
                relay_script(payload, name, argv), encoding="utf-8", errors="replace"
            )
            errors = asyncio.create_task(self._relay_errors(process.stderr, name))
            await self._relay_lines(process, name, mine)
            await errors
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait_closed(), STOP_BOUND)
            status = process.exit_status
            why = f"the relay on {name} ended (status {status}) without its report"
        except Exception as exc:  # asyncssh's: the connection was lost
            why = f"the relay on {name} was lost ({_reason(exc)})"
        finally:
            for follower in followers:
                follower.cancel()
        self._fail(behind, why)

    async def _relay_errors(self, stream: Any, name: str) -> None:
        while line := await stream.readline():
            self.report(name, f"relay: {line.rstrip()}", True)

    async def _relay_lines(self, process: Any, name: str, mine: set[str]) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        waiting = set(mine)  # hosts behind whose agent has not started yet
        try:
            while True:
                read = asyncio.create_task(process.stdout.readline())
                done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done and read not in done:
                    _end_input(process.stdin)  # the relay stops its hosts; keep reading
                    await read
                text = read.result()
                if not text:
                    return
                got = decode(text.rstrip("\n"))
                if got is None or got[0] not in mine:
                    self.report(name, f"relay: {text.rstrip()}", True)
                elif len(got) == 3:
                    self.report(got[0], got[1], got[2])
                    if got[1].startswith("bootstrap: "):
                        waiting.discard(got[0])
                elif not self._ends[got[0]].done():
                    status, error, copied, detached = got[1]
                    self._ends[got[0]].set_result(
                        HostResult(got[0], status, error, copied, detached)
                    )
                    waiting.discard(got[0])
                if not waiting:
                    self._gates[name].set()
        finally:
            stop.cancel()

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
        with contextlib.suppress(BrokenPipeError):  # it ended unread (no python3): read on
            process.stdin.write(files)
        gate = self._gates.get(name)
        opening = None if gate is None else asyncio.create_task(self._open(gate, process))
        try:
            errors = asyncio.create_task(self._lines(process.stderr, name, True, None, result))
            await self._lines(process.stdout, name, False, marker, result, probe)
            await errors
        finally:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait_closed(), STOP_BOUND)
            if opening is not None:
                opening.cancel()
        status: int | None = process.exit_status
        return status

    @staticmethod
    async def _open(gate: asyncio.Event, process: Any) -> None:
        await gate.wait()
        with contextlib.suppress(Exception):
            process.stdin.write("go\n")

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
                    _end_input(stream.channel)  # the agent stops; keep reading its lines
                    stop = None
                    done, _ = await asyncio.wait({read})
                line = read.result()
                if not line:
                    return
                line = line.rstrip("\n")
                if probe is not None and "agent" not in probe:
                    word, _, rest = line.partition(" ")
                    if word in ("python", "wrote", "cached", "agent"):
                        probe[word] = rest
                        if word == "cached" and rest == "True":
                            self.report(name, f"bootstrap: {result.copied} bytes copied", False)
                            self._probed[name].set()
                        continue
                if marker is not None and line.startswith(marker + " "):
                    word = line[len(marker) + 1 :]
                    if word.startswith("detached "):
                        result.detached_pid = int(word.split()[1])
                    elif probe is not None and "agent" in probe:  # else: the probe's
                        result.status = int(word)
                    _end_input(stream.channel)
                    continue
                self.report(name, line, error)
        finally:
            if stop is not None:
                stop.cancel()

    async def _follow(
        self, conn: asyncssh.SSHClientConnection, a: Assignment, parent: str | None = None
    ) -> None:
        """Copy the policy again each time its local file is saved with new content
        (``parent``: to the relay on that host, which copies it onward)."""
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

        def files() -> dict[str, str]:
            if parent is None:
                return self._files(a, None)
            with open(a.policy, encoding="utf-8") as f:
                return {child_policy(a.target.name, a.policy): strip_remote(f.read())}

        last = files()
        try:
            while True:
                await saved.wait()
                while saved.is_set():
                    saved.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(saved.wait(), QUIET)
                try:
                    now = files()
                except OSError:
                    continue  # mid-rename: the next event brings it
                if now == last:
                    continue
                last = now
                done = await conn.run(
                    files_script(parent or a.target.name), input=probe_input(now).decode()
                )
                what = "copied again" if "wrote" in str(done.stdout) else "NOT copied"
                if parent is None:
                    self.report(a.target.name, f"policy {what}: {a.policy}", "NOT" in what)
                elif "NOT" in what:
                    self.report(a.target.name, f"policy NOT copied to {parent}: {a.policy}", True)
        finally:
            unsubscribe()


def _end_input(channel: Any) -> None:
    """End the remote command's stdin; nothing to do when it has already ended."""
    with contextlib.suppress(BrokenPipeError):
        channel.write_eof()


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


def _stderr(done: Any) -> str:
    text = str(done.stderr or "").strip()
    return f": {text.splitlines()[-1]}" if text else ""


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__)
