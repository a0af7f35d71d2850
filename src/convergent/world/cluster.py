"""Agents that run etcd themselves, or find the cluster they belong to.

``convergent run`` builds its world from a :class:`ClusterConfig` with
:func:`open_world` (an async context manager; everything it starts ends with it):

- ``member=True`` (``--cluster``, ``--initial-cluster``): the agent starts its own etcd
  member (:class:`Member`) as a child process, data in ``STATE_DIR/etcd/`` (0700),
  waits until it serves clients (bounded by ``ready_timeout``), then talks to it and to
  the other members it lists.
- ``seeds``: the agent is a client of the cluster the seeds belong to; it asks the first
  seed that answers for the members' client URLs and uses them all.
- ``endpoints``: a cluster someone else runs; no member is ever started.

The member is the agent's child in every sense: started through
:func:`convergent.host.process.run` (its own session, killed by the agent's spawner
the moment the agent dies, kill -9 included), recorded in ``STATE_DIR/children`` so that the
next agent on that state directory kills one a killed agent left behind
(``reap_orphans``), and stopped (SIGTERM, then SIGKILL) when the run ends. Membership is
fixed: the members named at start. Changing it later is a matter of more or fewer
:class:`Member` objects owned by the agent, decided through the world (``members()``).

TLS (on unless ``insecure``): :mod:`convergent.world.tls` gives the CA and this host's
certificate; etcd requires a certificate of that CA from peers and clients
(``--client-cert-auth``, ``--peer-client-cert-auth``). Discovery and ``cluster status``
talk to etcd's JSON gateway (``/v3/...``, :func:`gateway`) with the same certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.errors import ConvergentError
from convergent.world.gateway import (
    REQUEST_TIMEOUT,
    ClusterError,
    discover,
    etcd_tls,
    gateway,
    member_list,
    member_status,
    rpc,
)

if TYPE_CHECKING:  # what a plain agent (no TLS, no member) needs imports none of these
    from convergent.host.process import Finished
    from convergent.world.base import World
    from convergent.world.etcd import EtcdWorld
    from convergent.world.tls import TLSFiles

__all__ = [
    "READY_TIMEOUT",
    "REQUEST_TIMEOUT",
    "ClusterConfig",
    "ClusterError",
    "Member",
    "MemberSpec",
    "connect",
    "discover",
    "etcd_argv",
    "gateway",
    "grant_hosts",
    "member_list",
    "member_status",
    "open_world",
    "rpc",
]

READY_TIMEOUT = 30.0  # seconds a member may take to serve clients (a 3-member start: ~3 s)
QUIET_LOG = 48 * 1024  # bytes of etcd's log read for the ready line; past them, ask etcd
# (host/process gives a command's first 64 KiB of stderr line by line, and a member that
# waits for its majority with fast timings writes ~5 KiB a second)
ASK_EVERY = 0.2  # seconds between readiness questions once the log is past QUIET_LOG
TIMING = "CONVERGENT_ETCD_TIMING"  # "HEARTBEAT_MS,ELECTION_MS" (etcd's own: 100,1000)
INSTALL = "apt-get install etcd-server"


class ClusterConfig(msgspec.Struct, frozen=True):
    """How a run finds its world (see the module's docstring)."""

    hostname: str
    state_dir: str
    member: bool = False
    initial_cluster: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    client_urls: tuple[str, ...] = ()
    peer_urls: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    insecure: bool = False
    token: str | None = None  # a join token's text (never logged)
    ready_timeout: float = READY_TIMEOUT


class MemberSpec(msgspec.Struct, frozen=True):
    """One etcd member: its name, data, URLs, the initial cluster and its TLS files."""

    name: str
    data_dir: str
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    initial_cluster: dict[str, tuple[str, ...]]
    tls: TLSFiles | None = None


def etcd_argv(spec: MemberSpec, etcd: str = "etcd") -> list[str]:
    """The command line of ``spec``'s member."""
    initial = ",".join(
        f"{name}={url}" for name, urls in sorted(spec.initial_cluster.items()) for url in urls
    )
    argv = [
        etcd,
        f"--name={spec.name}",
        f"--data-dir={spec.data_dir}",
        f"--listen-client-urls={','.join(spec.client_urls)}",
        f"--advertise-client-urls={','.join(spec.client_urls)}",
        f"--listen-peer-urls={','.join(spec.peer_urls)}",
        f"--initial-advertise-peer-urls={','.join(spec.peer_urls)}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",  # ignored once the data directory holds a member
        "--initial-cluster-token=convergent",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    timing = os.environ.get(TIMING, "")
    if timing:
        heartbeat, _, election = timing.partition(",")
        argv += [f"--heartbeat-interval={int(heartbeat)}", f"--election-timeout={int(election)}"]
    if spec.tls is not None:
        for side in ("", "peer-"):
            argv += [
                f"--{side}cert-file={spec.tls.cert}",
                f"--{side}key-file={spec.tls.key}",
                f"--{side}trusted-ca-file={spec.tls.ca}",
                f"--{side}client-cert-auth",
            ]
    return argv


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc or url


class Member:
    """An etcd member run by this agent; :meth:`start` it, :meth:`aclose` it."""

    def __init__(
        self, spec: MemberSpec, state_dir: str, log: Callable[[str], None] | None = None
    ) -> None:
        self.spec = spec
        self.state_dir = state_dir
        self._log = log
        self._task: asyncio.Task[Finished] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._problems: list[str] = []
        self._closing = False
        self._read = 0  # bytes of log read
        self._asking: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, bound: float = READY_TIMEOUT) -> None:
        """Start the member and return once it serves clients; ClusterError (the member
        killed) when it exits first or is not ready within ``bound`` seconds."""
        import shutil

        from convergent.host import fs
        from convergent.host.process import children_dir, run

        etcd = shutil.which("etcd")
        if etcd is None:
            raise ClusterError(f"etcd is not installed (no 'etcd' on PATH): {INSTALL}")
        try:
            with fs.locate(self.spec.data_dir, create=True) as at:
                if fs.lstat(at) is None:
                    fs.make_directory(at, 0o700, -1, -1, clear=False)
                fd, _ = fs.open_node(at, directory=True)
                try:
                    fs.set_meta(fd, 0o700)  # etcd wants its data private
                finally:
                    os.close(fd)
        except OSError as exc:
            raise ClusterError(
                f"cannot make the etcd data directory {self.spec.data_dir}: {exc}"
            ) from exc
        loop = asyncio.get_running_loop()
        self._ready = ready = loop.create_future()
        self._task = loop.create_task(
            run(
                etcd_argv(self.spec, etcd),
                log=self._line,
                children=children_dir(self.state_dir),
                owner=f"etcd[{self.spec.name}]",
            ),
            name=f"etcd member {self.spec.name}",
        )
        self._task.add_done_callback(self._ended)
        try:
            async with asyncio.timeout(bound):
                await asyncio.shield(ready)
        except TimeoutError:
            await self.aclose()
            raise ClusterError(
                f"etcd member {self.spec.name} did not serve clients within {bound:g} s"
                f"{self._why()}; with --initial-cluster, start every member named there "
                "(each waits for a majority)"
            ) from None
        except ClusterError:
            await self.aclose()
            raise
        finally:
            if self._asking is not None:
                self._asking.cancel()

    async def _ask(self) -> None:
        """Past the part of the log we read: ask the member whether it has a leader."""
        ready = self._ready
        while ready is not None and not ready.done():
            try:
                answer = await member_status(self.spec.client_urls[0], self.spec.tls)
                if answer["leader"] and not ready.done():
                    ready.set_result(None)
                    return
            except ClusterError:
                pass  # not listening yet, or no leader yet
            await asyncio.sleep(ASK_EVERY)

    def _line(self, line: str) -> None:
        self._read += len(line) + 1
        if self._read > QUIET_LOG and self._asking is None and self._ready is not None:
            self._asking = asyncio.get_running_loop().create_task(self._ask())
        _, _, text = line.partition(": ")
        try:
            entry = msgspec.json.decode(text)
        except ValueError:
            return
        if not isinstance(entry, dict):
            return
        message = str(entry.get("msg", ""))
        level = entry.get("level")
        if message.startswith("serving client traffic"):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        if level in ("error", "fatal", "panic") or message == "failed to start etcd":
            problem = str(entry.get("error") or message)
            self._problems = [*self._problems[-9:], problem]
            if self._log is not None and self._ready is not None and self._ready.done():
                self._log(f"etcd member {self.spec.name}: {problem}")

    def _why(self) -> str:
        for problem in self._problems:
            if "address already in use" in problem:
                where = problem.split("listen tcp ", 1)[-1].split(":", 2)
                address = ":".join(where[:2])
                return (
                    f": {address} is in use (another etcd, or another agent?); choose "
                    "other ports with --client-urls and --peer-urls"
                )
        if self._problems:
            return f": {self._problems[-1]}"
        return ""

    def _ended(self, task: asyncio.Task[Finished]) -> None:
        ready = self._ready
        if task.cancelled():
            error = None
            code = None
        else:
            error = task.exception()
            code = None if error is not None else task.result().code
        if error is not None and isinstance(error, FileNotFoundError):
            problem = ClusterError(f"etcd is not installed ({error}): {INSTALL}")
        elif error is not None:
            problem = ClusterError(f"etcd member {self.spec.name} could not start: {error}")
        else:
            problem = ClusterError(
                f"etcd member {self.spec.name} exited (status {code}){self._why()}"
            )
        if ready is not None and not ready.done():
            ready.set_exception(problem)
            ready.exception()  # retrieved: start() raises it
        elif not self._closing and self._log is not None:
            self._log(f"{problem}; the agent goes on with the other members")

    async def aclose(self) -> None:
        """Stop the member (SIGTERM, then SIGKILL) and wait until it is gone."""
        self._closing = True
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# -- the world of a run -----------------------------------------------------------------


def _member_spec(config: ClusterConfig, tls: TLSFiles | None) -> MemberSpec:
    initial = dict(config.initial_cluster) or {config.hostname: config.peer_urls}
    return MemberSpec(
        name=config.hostname,
        data_dir=os.path.join(os.path.abspath(config.state_dir), "etcd"),
        client_urls=config.client_urls,
        peer_urls=config.peer_urls,
        initial_cluster=initial,
        tls=tls,
    )


def _tls(config: ClusterConfig) -> TLSFiles | None:
    if config.insecure:
        return None
    from convergent.world import tls

    if config.token is not None:
        tls.accept_token(config.state_dir, config.token, config.hostname)
    if config.member:
        return tls.member_files(
            config.state_dir,
            config.hostname,
            [*config.client_urls, *config.peer_urls],
            make_ca=config.token is None and not config.initial_cluster,
        )
    files = tls.host_files(config.state_dir, config.hostname)
    for path in (files.ca, files.cert, files.key):
        if not os.path.exists(path):
            raise ClusterError(
                f"no {path}: a client of a TLS cluster needs its CA and a certificate; "
                f"make a token on the cluster's first host ('convergent cluster token "
                f"--hostname {config.hostname} > FILE'), then run with --join-token FILE"
            )
    return files


async def _etcd_world(endpoints: list[str], config: ClusterConfig, tls: TLSFiles | None) -> World:
    from convergent.world.etcd import EtcdWorld

    world = EtcdWorld(endpoints, hostname=config.hostname, tls=etcd_tls(tls))
    await world.start()
    return world


def connect(endpoints: list[str], tls: TLSFiles | None) -> EtcdWorld:
    """A connection to the cluster without a session (no lease, no ``alive`` key): for
    administration (granting roles) and reading (``cluster status``). Close it with
    ``aclose()``."""
    from convergent.world.etcd import EtcdWorld
    from convergent.world.etcdwire import load_wire

    client = EtcdWorld(endpoints, hostname="-", tls=etcd_tls(tls), retry_for=REQUEST_TIMEOUT)
    client._wire = load_wire(
        client.endpoints, client.tls, client.wire
    )  # started, without a session
    return client


async def grant_hosts(endpoints: list[str], tls: TLSFiles, admin: str, hosts: list[str]) -> None:
    """Give each of ``hosts`` its role (its own prefix read-write, the rest of the world
    read-only) and turn etcd's authentication on, with ``admin`` (this host, holding the
    cluster CA) as its administrator. Idempotent."""
    from convergent.world.etcdauth import enable_auth, grant_host

    client = connect(endpoints, tls)
    try:
        for host in sorted({admin, *hosts}):
            await grant_host(client, host)
        await enable_auth(client, admin)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def open_world(
    config: ClusterConfig, log: Callable[[str], None] | None = None
) -> AsyncIterator[World]:
    """The world of a run for ``config``: starts the member (``config.member``), finds
    the members, connects; on exit closes the world, then stops the member. Raises
    ClusterError (or TLSError) before anything else happens when any of it fails."""
    try:
        tls = _tls(config)
    except ConvergentError as exc:
        raise ClusterError(str(exc)) from None
    member: Member | None = None
    world: World | None = None
    try:
        if config.member:
            member = Member(_member_spec(config, tls), config.state_dir, log)
            await member.start(config.ready_timeout)
        if _light(tls):  # discovery on the world's own connection
            seeds = config.seeds or config.endpoints or config.client_urls
            world = await _found_world(list(seeds), config, adopt=not config.endpoints)
        else:
            world = await _discovered_world(config, tls)
        yield world
    finally:
        if world is not None:
            await _close(world)
        if member is not None:
            await member.aclose()


def _light(tls: TLSFiles | None) -> bool:
    """Whether the world is plaintext over etcd's gateway (see etcdwire.wire_name):
    then discovery is one request on the world's own connection."""
    from convergent.world.etcdwire import wire_name

    try:
        return tls is None and wire_name(None) == "http"
    except ConvergentError as exc:
        raise ClusterError(str(exc)) from None


async def _found_world(seeds: list[str], config: ClusterConfig, *, adopt: bool) -> World:
    """The world through ``seeds``: one MemberList on its connection finds the members
    (with ``adopt``, they become its endpoints; without, it says the cluster answers),
    then the session starts on that same connection."""
    from convergent.world.base import WorldError
    from convergent.world.etcd import EtcdWorld

    world = EtcdWorld(seeds, hostname=config.hostname, tls=None)
    try:
        try:
            await world.discover(adopt=adopt)
        except WorldError as exc:
            raise ClusterError(
                f"no seed answered, so no cluster to join (nothing was applied):\n  {exc}"
            ) from None
        await world.start()
    except BaseException:
        await world.aclose()
        raise
    return world


async def _discovered_world(config: ClusterConfig, tls: TLSFiles | None) -> World:
    """The world over gRPC: discovery through the gateway first (Python's ssl says why a
    handshake failed), the roles granted by the holder of the CA."""
    if config.member:
        found = await discover(config.client_urls, tls)
        endpoints = [*config.client_urls, *(u for u in found if u not in config.client_urls)]
        if tls is not None and _holds_ca(config.state_dir):
            from convergent.world.tls import issued

            hosts = [*config.initial_cluster, *issued(config.state_dir)]
            await grant_hosts(endpoints, tls, config.hostname, hosts)
    elif config.seeds:
        endpoints = await discover(config.seeds, tls)
    else:
        endpoints = list(config.endpoints)
        await discover(endpoints, tls)  # reachable, and our certificate is accepted
    return await _etcd_world(endpoints, config, tls)


def _holds_ca(state_dir: str) -> bool:
    from convergent.world.tls import tls_dir

    return os.path.exists(os.path.join(tls_dir(state_dir), "ca.key"))


async def _close(world: Any) -> None:
    closing = getattr(world, "aclose", None)
    if closing is not None:
        await closing()
        return
    closing = getattr(world, "close", None)
    if closing is not None:
        closing()
