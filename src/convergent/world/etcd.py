"""The etcd world: key/values every host of a cluster shares, over etcd 3.4+ (v3 API).

Wiring it (the cluster's agent does this)::

    world = EtcdWorld(
        ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],  # or host:port; several
        hostname="web1",                   # this agent: writes under /convergent/hosts/web1/
        tls=Tls(ca=Path("ca.pem"), cert=Path("web1.pem"), key=Path("web1-key.pem")),
        ttl=10.0,                          # the session lease's TTL, seconds
    )
    await world.start()      # connects, grants the session lease, publishes alive
    ...                      # ctx.world for every resource of the run
    await world.aclose()     # revokes the lease: leased keys vanish at once

or ``async with EtcdWorld(...) as world``, or ``world = await open_etcd_world(...)``.
``user=(name, password)`` signs in to an etcd whose password authentication is on
(the gateway's wire). ``call_timeout`` (2 s) bounds each request; ``retry_for`` (10 s)
bounds the retries of one operation across the endpoints, after which it raises
:class:`~convergent.world.base.WorldError` naming every endpoint and what it answered.

Client: one of two wires (:mod:`convergent.world.etcdwire`), chosen by
:meth:`EtcdWorld.start` and imported then only (a run on the local world imports
neither): etcd's JSON gateway over HTTP/1.1 with the standard library
(:mod:`convergent.world.etcdhttp`, the default), or gRPC (``grpc.aio``) with the etcd v3
stubs the ``aetcd`` package generates, when the agent's identity is its client
certificate (``wire=`` or ``CONVERGENT_ETCD_WIRE`` chooses by hand). The logic below
(retries, watches resumed, the lease) is the same for both.

- Endpoints: one channel at a time, to the current endpoint; a request that fails for
  want of a server (unavailable, deadline, no leader) moves every request to the next
  endpoint and is retried there, round after round, until ``retry_for`` has passed.
- Watches: one stream each (with etcd's "require leader" flag, so a member cut off
  from the quorum ends it instead of going silent), resumed after any failure, on
  whichever endpoint is current, from the revision after the last event it delivered:
  no event is lost or repeated when the member an agent talks to dies. A watch whose
  revision etcd has compacted meanwhile re-reads the current values (spurious calls:
  allowed) and goes on from there; a deletion inside the compacted span is not told.
- Session: one lease per agent, granted at start and kept alive every ``ttl / 3``;
  ``set(..., lease=True)`` attaches a key to it, so when the agent dies its keys are
  deleted by etcd within ``ttl``. If the lease expires anyway (the agent was cut off
  for longer than ``ttl``), a new one is granted and every leased key written again.
- Locks: etcd's mutex recipe over the session (:mod:`convergent.world.etcdlock`).
- Members: the hosts whose leased ``/convergent/hosts/HOST/alive`` key exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from convergent.world import keys
from convergent.world.base import Unsubscribe, WatchCallback, WorldError
from convergent.world.etcdwatch import Watch, follow, opened
from convergent.world.etcdwire import Connection, Tls, Wire, load_wire, prefix_end, text

__all__ = ["DEFAULT_TTL", "EtcdWorld", "Tls", "open_etcd_world"]

DEFAULT_TTL = 10.0
_T = TypeVar("_T")
TXN_OPS = 64  # keys in one transaction of set_many (etcd's --max-txn-ops: 128 by default)
TXN_BYTES = 256 * 1024  # and at most this many bytes, or one key (etcd: 1.5 MiB a request)
_BACKOFF_FIRST = 0.02  # seconds between rounds over every endpoint, doubling...
_BACKOFF_MAX = 0.5  # ...up to this


class EtcdWorld:
    """The :class:`~convergent.world.base.World` of a cluster, over etcd."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        hostname: str,
        tls: Tls | None = None,
        ttl: float = DEFAULT_TTL,
        call_timeout: float = 2.0,
        retry_for: float = 10.0,
        wire: str | None = None,
        user: tuple[str, str] | None = None,
    ) -> None:
        if not endpoints:
            raise WorldError("no etcd endpoint given; name at least one (host:port or URL)")
        if ttl < 1:
            raise WorldError(f"the session TTL is {ttl} s; etcd leases last at least 1 s")
        try:
            self.hostname = keys.check_hostname(hostname)
        except ValueError as exc:
            raise WorldError(str(exc)) from None
        self.endpoints = tuple(endpoints)
        self.tls = tls
        self.ttl = ttl
        self.call_timeout = call_timeout
        self.retry_for = retry_for
        self.wire = wire  # "http", "grpc" or None: see etcdwire.wire_name
        self._user = user  # (name, password) for etcd's password authentication
        self._wire: Wire | None = None
        self._index = 0
        self._conn: Connection | None = None
        self._lease = 0
        self._leased: dict[str, str] = {}
        self._renewing = asyncio.Lock()
        self._watches: set[Watch] = set()
        self._keepalive: asyncio.Task[None] | None = None
        self._token = os.urandom(8).hex()  # (secrets: ~3 ms of imports)
        self._lock_ids = itertools.count(1)
        self._closed = False
        self._beat = asyncio.Event()  # set (and replaced) at each confirmed keepalive

    def __repr__(self) -> str:
        return f"<EtcdWorld {self.hostname} at {','.join(self.endpoints)}>"

    @property
    def endpoint(self) -> str | None:
        """The endpoint requests go to now (None before the first request)."""
        return self._conn.endpoint if self._conn is not None else None

    async def wait_keepalive(self) -> None:
        """Until etcd next confirms the session lease (every ``ttl / 3`` while healthy)."""
        await self._beat.wait()

    # -- session ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, grant the session lease, publish this host as alive."""
        if self._keepalive is not None:
            return
        loaded = self._wire is None
        if loaded:
            self._wire = load_wire(self.endpoints, self.tls, self.wire, self._user)
        try:
            self._lease = await self._grant()
        except BaseException:
            if loaded:
                self._wire = None  # start() may be tried again
            raise
        self._keepalive = asyncio.create_task(self._keep_alive(), name=f"{self!r} keepalive")
        await self.set(keys.alive_key(self.hostname), keys.STATUS_ALIVE, lease=True)

    async def discover(self, *, adopt: bool = True) -> list[str]:
        """The client URLs of every member of the cluster, asked of each endpoint in turn
        (once each, no retry) on the connection this world goes on with: before
        :meth:`start`, so that an agent finds its cluster without a connection of its
        own. With ``adopt``, the world's endpoints become the endpoint that answered and
        every member's. WorldError, saying what each endpoint answered, when none did."""
        if self._wire is None:
            self._wire = load_wire(self.endpoints, self.tls, self.wire, self._user)
        wire = self._wire
        answers: list[str] = []
        for _ in self.endpoints:
            conn = self._connection()
            try:
                reply = await conn.cluster.MemberList(
                    wire.rpc.MemberListRequest(), timeout=self.call_timeout
                )
            except wire.rpc_error as exc:
                said = exc.details()
                answers.append(
                    said if said.startswith(conn.endpoint) else f"{conn.endpoint}: {said}"
                )
                self._rotate(conn)
                continue
            urls: list[str] = []
            for member in reply.members:
                urls += [url for url in member.clientURLs if url not in urls]
            if adopt and urls:
                self.endpoints = (conn.endpoint, *(u for u in urls if u != conn.endpoint))
                self._index = 0
            return urls or [conn.endpoint]
        raise WorldError("\n  ".join(answers))

    async def __aenter__(self) -> EtcdWorld:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the session: watches stop, the lease is revoked (leased keys vanish; if
        no member answers within ``call_timeout``, they vanish within the TTL), the
        connection closes."""
        if self._closed:
            return
        tasks = [w.task for w in self._watches if w.task is not None]
        for watch in self._watches:
            watch.active = False
        self._watches.clear()
        if self._keepalive is not None:
            tasks.append(self._keepalive)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wire, lease = self._wire, self._lease
        if wire is not None and lease:
            self.retry_for = min(self.retry_for, self.call_timeout)
            with contextlib.suppress(WorldError):
                await self._call(
                    "revoke the session lease",
                    lambda c: c.lease.LeaseRevoke(
                        wire.rpc.LeaseRevokeRequest(ID=lease), timeout=self.call_timeout
                    ),
                )
        self._closed = True
        self._leased.clear()
        if self._conn is not None:
            await self._conn.close()
        self._conn = None

    async def _grant(self) -> int:
        wire = self._need_wire()
        ttl = math.ceil(self.ttl)
        reply = await self._call(
            "grant the session lease",
            lambda c: c.lease.LeaseGrant(
                wire.rpc.LeaseGrantRequest(TTL=ttl), timeout=self.call_timeout
            ),
        )
        if reply.error:
            raise WorldError(f"etcd refused a session lease: {reply.error}")
        return int(reply.ID)

    async def _renew(self, lost: int) -> None:
        """The lease ``lost`` expired: grant another, write every leased key again."""
        async with self._renewing:
            if self._lease != lost or self._closed:
                return  # another task renewed it already
            lease = await self._grant()
            for key, value in list(self._leased.items()):
                await self._put(key, value, lease=True, lease_id=lease)
            self._lease = lease  # only now: if a write failed, the next keepalive retries

    async def _keep_alive(self) -> None:
        wire = self._need_wire()
        interval = self.ttl / 3
        failures = 0
        while True:
            conn = self._connection()
            call = conn.lease.LeaseKeepAlive()
            try:
                while True:
                    lease = self._lease
                    await call.write(wire.rpc.LeaseKeepAliveRequest(ID=lease))
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a
                    # cancellation that comes as the read completes (aclose then hangs)
                    async with asyncio.timeout(self.call_timeout):
                        reply = await call.read()
                    if reply is wire.eof:
                        raise ConnectionError("the keepalive stream ended")
                    failures = 0
                    if reply.TTL <= 0:
                        await self._renew(lease)
                        continue
                    beat, self._beat = self._beat, asyncio.Event()
                    beat.set()
                    await asyncio.sleep(interval)  # the keepalive period, not a wait for anything
            except asyncio.CancelledError:
                call.cancel()
                if not conn.dropped():
                    raise
                failures += 1  # its channel was closed: go on through the current one
                await self._backoff(failures)
            except Exception as exc:  # the stream broke: go on through another member
                call.cancel()
                self._unexpected(exc, "the session keepalive")
                failures += 1
                self._rotate(conn)
                await self._backoff(failures)

    # -- requests ----------------------------------------------------------------------

    def _unexpected(self, exc: Exception, what: str) -> None:
        """Report ``exc`` unless it is how a stream ends when its member goes away."""
        wire = self._wire
        expected = (TimeoutError, ConnectionError, WorldError, asyncio.InvalidStateError)
        if isinstance(exc, expected) or (wire is not None and isinstance(exc, wire.rpc_error)):
            return
        asyncio.get_running_loop().call_exception_handler(
            {"message": f"{self!r}: {what} failed; retrying", "exception": exc}
        )

    def _need_wire(self) -> Wire:
        if self._wire is None:
            raise WorldError(f"{self!r} is not started: await world.start() first")
        if self._closed:
            raise WorldError(f"{self!r} is closed")
        return self._wire

    def _connection(self) -> Connection:
        wire = self._need_wire()
        if self._conn is None:
            self._conn = wire.connect(self.endpoints[self._index])
        return self._conn

    def _rotate(self, failed: Connection) -> None:
        """``failed`` did not answer: the next endpoint serves every request from now."""
        if self._conn is not failed:
            return
        self._conn = None
        self._index = (self._index + 1) % len(self.endpoints)
        task = asyncio.get_running_loop().create_task(failed.close(self.call_timeout))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _backoff(self, failures: int) -> None:
        """After a failure on every endpoint, wait a little before the next round."""
        if failures % len(self.endpoints) == 0:
            rounds = failures // len(self.endpoints)
            await asyncio.sleep(min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (rounds - 1)))

    async def _call(
        self, what: str, op: Callable[[Connection], Awaitable[_T]], *, leased: bool = False
    ) -> _T:
        """``op`` on the current endpoint, retried on the next ones while no member can
        answer, for ``retry_for`` seconds at most."""
        wire = self._need_wire()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        answers: dict[str, str] = {}
        failures = 0
        while True:
            conn = self._connection()
            lease = self._lease
            try:
                return await op(conn)
            except wire.rpc_error as exc:
                code = exc.code()
                if leased and code == wire.not_found:
                    await self._renew(lease)  # the session expired meanwhile
                elif code not in wire.retryable:
                    raise WorldError(
                        f"etcd at {conn.endpoint} refused to {what}: {exc.details()}"
                    ) from None
                else:
                    answers[conn.endpoint] = f"{code.name}: {exc.details()}"
                    self._rotate(conn)
            except (TimeoutError, ConnectionError, asyncio.InvalidStateError) as exc:
                answers[conn.endpoint] = str(exc) or type(exc).__name__  # a stream broke
                self._rotate(conn)
            except asyncio.CancelledError:
                if not conn.dropped():
                    raise
                answers[conn.endpoint] = "the connection was closed under the request"
            failures += 1
            if loop.time() >= deadline:
                said = "; ".join(f"{e}: {a}" for e, a in answers.items()) or "no answer"
                raise WorldError(
                    f"could not {what}: no etcd member answered within {self.retry_for:g} s"
                    f" ({said}); check that etcd runs at {', '.join(self.endpoints)}"
                    " and that this host can reach it, or name other endpoints"
                    + (
                        "; with TLS, that the CA given signed the members' certificates"
                        " and that the cluster trusts this host's certificate"
                        if self.tls is not None
                        else ""
                    )
                )
            await self._backoff(failures)

    async def _put(self, key: str, value: str, *, lease: bool, lease_id: int | None = None) -> None:
        rpc = self._need_wire().rpc

        def put(c: Connection) -> Any:
            attached = (self._lease if lease_id is None else lease_id) if lease else 0
            request = rpc.PutRequest(key=key.encode(), value=value.encode(), lease=attached)
            return c.kv.Put(request, timeout=self.call_timeout)

        await self._call(f"write {key}", put, leased=lease and lease_id is None)

    async def _put_many(self, items: list[tuple[str, str]], *, lease: bool) -> None:
        """``items`` in one transaction: one revision, one watch event batch."""
        rpc = self._need_wire().rpc

        def txn(c: Connection) -> Any:
            attached = self._lease if lease else 0
            ops = [
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=k.encode(), value=v.encode(), lease=attached)
                )
                for k, v in items
            ]
            return c.kv.Txn(rpc.TxnRequest(success=ops), timeout=self.call_timeout)

        more = f" and {len(items) - 1} more" if len(items) > 1 else ""
        await self._call(f"write {items[0][0]}{more}", txn, leased=lease)

    async def _range(self, what: str, **request: Any) -> Any:
        rpc = self._need_wire().rpc
        return await self._call(
            what, lambda c: c.kv.Range(rpc.RangeRequest(**request), timeout=self.call_timeout)
        )

    async def auth_call(self, method: str, **fields: Any) -> Any:
        """One request of etcd's Auth service (``method``: ``RoleAdd``, ``UserAdd``,
        ``AuthEnable``...; ``fields``: the request's), retried like any other; for
        :mod:`convergent.world.etcdauth`."""
        rpc = self._need_wire().rpc
        name = method if method.startswith("Auth") else f"Auth{method}"
        request = getattr(rpc, f"{name}Request")(**fields)
        return await self._call(
            f"{method} ({', '.join(f'{k}={v}' for k, v in fields.items() if k != 'perm')})",
            lambda c: getattr(c.auth, method)(request, timeout=self.call_timeout),
        )

    # -- the World protocol ----------------------------------------------------------

    async def get(self, key: str) -> str | None:
        reply = await self._range(f"read {key}", key=key.encode())
        return text(reply.kvs[0].value) if reply.kvs else None

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        start, end = prefix_end(prefix)
        reply = await self._range(f"read {prefix}*", key=start, range_end=end)
        return {text(kv.key): text(kv.value) for kv in reply.kvs}

    async def set(self, key: str, value: str, *, lease: bool = False) -> None:
        if lease:
            self._leased[key] = value
        else:
            self._leased.pop(key, None)
        await self._put(key, value, lease=lease)

    async def set_many(self, items: Mapping[str, str], *, lease: bool = False) -> None:
        for key, value in items.items():
            if lease:
                self._leased[key] = value
            else:
                self._leased.pop(key, None)
        batch = list(items.items())
        start = 0
        while start < len(batch):  # etcd takes at most 128 operations in a transaction
            size, end = 0, start
            while end < len(batch) and end - start < TXN_OPS:
                size += len(batch[end][0].encode()) + len(batch[end][1].encode())
                if size > TXN_BYTES and end > start:
                    break  # no larger than one put of the key alone would be
                end += 1
            await self._put_many(batch[start:end], lease=lease)
            start = end

    async def delete_many(self, names: Iterable[str]) -> None:
        rpc = self._need_wire().rpc
        batch = list(names)
        for key in batch:
            self._leased.pop(key, None)
        for start in range(0, len(batch), TXN_OPS):
            part = batch[start : start + TXN_OPS]

            def txn(c: Connection, part: list[str] = part) -> Any:
                ops = [
                    rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k.encode()))
                    for k in part
                ]
                return c.kv.Txn(rpc.TxnRequest(success=ops), timeout=self.call_timeout)

            more = f" and {len(part) - 1} more" if len(part) > 1 else ""
            await self._call(f"delete {part[0]}{more}", txn)

    async def delete(self, key: str) -> None:
        rpc = self._need_wire().rpc
        self._leased.pop(key, None)
        await self._call(
            f"delete {key}",
            lambda c: c.kv.DeleteRange(
                rpc.DeleteRangeRequest(key=key.encode()), timeout=self.call_timeout
            ),
        )

    async def members(self) -> dict[str, str]:
        found = {}
        for key, value in (await self.get_prefix(keys.HOSTS)).items():
            split = keys.split_host_key(key)
            if split is not None and split[1] == keys.ALIVE:
                found[split[0]] = value
        return found

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe:
        watch = Watch(key, callback, prefix)
        conn, call = await self._call(f"watch {key}", lambda c: opened(self, c, watch))
        watch.task = asyncio.create_task(follow(self, watch, conn, call), name=f"watch {key}")
        self._watches.add(watch)

        def unsubscribe() -> None:
            if watch.active:
                watch.active = False
                self._watches.discard(watch)
                if watch.task is not None:
                    watch.task.cancel()

        return unsubscribe

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        from convergent.world.etcdlock import hold

        return hold(self, name)

    async def put(self, key: str, value: str, *, lease: bool) -> None:
        """Write ``key`` without remembering it for a renewed session (a lock's key)."""
        await self._put(key, value, lease=lease)

    async def read(self, what: str, **request: Any) -> Any:
        """One Range request (``request``: its fields) on this world's wire."""
        return await self._range(what, **request)

    @property
    def rpc(self) -> Any:
        """The requests of this world's wire (``rpc.RangeRequest(...)``)."""
        return self._need_wire().rpc

    def lock_key(self, prefix: str) -> str:
        """A new contender's key under ``prefix``, unique to this agent and call."""
        return f"{prefix}{self._token}-{next(self._lock_ids)}"


async def open_etcd_world(
    endpoints: Sequence[str],
    *,
    hostname: str,
    tls: Tls | None = None,
    ttl: float = DEFAULT_TTL,
) -> EtcdWorld:
    """A started :class:`EtcdWorld` (``aclose()`` it at the end)."""
    world = EtcdWorld(endpoints, hostname=hostname, tls=tls, ttl=ttl)
    try:
        await world.start()
    except BaseException:
        await world.aclose()
        raise
    return world
