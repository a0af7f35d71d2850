"""The light wire to etcd: its JSON gateway (``/v3/...``) over HTTP/1.1, on asyncio alone.

etcd 3.4+ serves its v3 API as JSON over HTTP on the client port (the grpc-gateway):
``POST /v3/kv/range`` with ``{"key": BASE64}``, and so on; 64-bit integers are strings
in answers, fields with their default value are left out. This module speaks it with
asyncio and msgspec's JSON (bytes go as base64; ``ssl`` for TLS only): ~0.05 s
of CPU and ~20 MiB less per agent than grpc (bench/results-w9.md). It has the shape of
the gRPC wire (:mod:`convergent.world.etcdwire`), so :mod:`convergent.world.etcd` keeps
one logic of retries, watches and leases for both:

- ``wire.rpc.PutRequest(key=b"k", value=b"v")`` is a request (a dict; attributes set
  later are fields too); ``conn.kv.Put(request, timeout=2)`` sends it on a kept-alive
  connection of the endpoint's small pool; the answer is a :class:`Message`, read like
  the protobuf (defaults included, ``kvs[0].value`` bytes, ``header.revision`` an int).
- ``conn.watch.Watch(metadata=...)`` is a stream on a connection of its own: ``write``
  sends the create request (etcd keeps the watch after the request body ends), ``read``
  returns each ``result`` as it comes (newline-delimited JSON in a chunked answer),
  :data:`EOF` at its end. ``conn.lease.LeaseKeepAlive()``: each ``write``/``read`` pair
  is one ``POST /v3/lease/keepalive``.
- Failures raise :class:`HttpRpcError` with gRPC's status code (the gateway's JSON
  error; ``UNAVAILABLE`` when the connection fails, ``DEADLINE_EXCEEDED`` past the
  timeout), so the same codes are retried. Sockets have TCP keepalive (5 s idle, 3
  probes 1 s apart) and an 8 s user timeout: a vanished member ends its streams in
  ~8 s, as gRPC's pings did. ``hasleader`` goes as ``Grpc-Metadata-Hasleader``.
- TLS: an ``ssl`` context with the given CA and client certificate. (etcd never takes
  the user from a gateway client's certificate, and refuses one with a common name once
  its authentication is on: convergent's TLS clusters keep the gRPC wire, see
  :func:`convergent.world.etcdwire.wire_name`.) With a user and password the wire signs
  in (``/v3/auth/authenticate``) and sends the token as ``Authorization``; a token etcd
  forgot (expired, a restarted member) is renewed.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import enum
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.world import http1

if TYPE_CHECKING:
    import ssl

__all__ = [
    "EOF",
    "HttpConnection",
    "HttpRpcError",
    "HttpWire",
    "Message",
    "Request",
    "StatusCode",
    "dial",
]

CONNECT_TIMEOUT = 2.0  # seconds a TCP (and TLS) connection may take to open
IDLE_KEPT = 4  # idle connections kept per endpoint


# gRPC's status codes (0-16, in order): the gateway's errors carry them as ``code``
StatusCode = enum.IntEnum(
    "StatusCode",
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS"
    " PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE"
    " UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED",
    start=0,
)


class HttpRpcError(Exception):
    """A request etcd refused, or that did not reach it: ``code()`` and ``details()``."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


EOF: Any = object()
"""What a stream's ``read`` returns once etcd ended it."""

_BYTES = frozenset({"key", "value", "range_end"})
_INTS = frozenset(  # int64 fields (strings in JSON) and int32 ones
    {"ID", "TTL", "grantedTTL", "revision", "create_revision", "mod_revision", "version"}
    | {"lease", "compact_revision", "member_id", "cluster_id", "raft_term", "leader"}
    | {"count", "deleted", "watch_id", "raftIndex", "raftTerm", "dbSize"}
)
_LISTS = frozenset({"kvs", "events", "members", "errors", "clientURLs", "peerURLs"})
_BOOLS = frozenset({"created", "canceled", "more", "fragment", "isLearner"})


class Message:
    """An answer of etcd, read like the protobuf message it stands for: absent fields
    have their default, bytes fields are decoded, int64 strings are ints."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        try:
            raw = self._fields[name]
        except KeyError:
            raw = None
        if name in _BYTES:
            return binascii.a2b_base64(raw) if raw else b""
        if name in _INTS:
            return int(raw) if raw else 0
        if name in _LISTS:
            return [Message(x) if isinstance(x, dict) else x for x in raw or ()]
        if name in _BOOLS:
            return bool(raw)
        if isinstance(raw, dict):
            return Message(raw)
        if raw is None:
            return Message({}) if name in ("header", "kv", "prev_kv") else ""
        return raw


class Request(dict[str, Any]):
    """A request's fields (bytes are sent as base64); fields may be set as attributes."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class RangeRequest(Request):
    __slots__ = ()
    DESCEND = "DESCEND"
    CREATE = "CREATE"


class _Rpc:
    """``rpc.NameRequest(**fields)`` for every request of the v3 API (and ``RequestOp``,
    a transaction's operation)."""

    RangeRequest = RangeRequest

    def __getattr__(self, name: str) -> type[Request]:
        if name.endswith("Request") or name == "RequestOp":
            return Request
        raise AttributeError(name)


# method -> (path, streaming)
_PATHS: dict[str, tuple[str, bool]] = {
    "Range": ("/v3/kv/range", False),
    "Put": ("/v3/kv/put", False),
    "Txn": ("/v3/kv/txn", False),
    "DeleteRange": ("/v3/kv/deleterange", False),
    "LeaseGrant": ("/v3/lease/grant", False),
    "LeaseRevoke": ("/v3/lease/revoke", False),
    "LeaseKeepAlive": ("/v3/lease/keepalive", True),
    "Watch": ("/v3/watch", True),
    "MemberList": ("/v3/cluster/member/list", False),
    "Status": ("/v3/maintenance/status", False),
    "Authenticate": ("/v3/auth/authenticate", False),
    "AuthEnable": ("/v3/auth/enable", False),
    "UserAdd": ("/v3/auth/user/add", False),
    "UserGrantRole": ("/v3/auth/user/grant", False),
    "RoleAdd": ("/v3/auth/role/add", False),
    "RoleGrantPermission": ("/v3/auth/role/grant", False),
}


def _error(data: bytes, status: int) -> HttpRpcError:
    """The gateway's JSON error (``{"error", "message", "code"}``) as an exception."""
    try:
        said = msgspec.json.decode(data)
        if "error" in said and isinstance(said["error"], dict):  # a stream's error
            said = said["error"]
        code = StatusCode(int(said.get("code", said.get("grpc_code", StatusCode.UNKNOWN))))
        message = str(said.get("message") or said.get("error") or "")
    except (ValueError, TypeError, AttributeError):
        code = StatusCode.UNAVAILABLE if status >= 500 else StatusCode.UNKNOWN
        message = data[:200].decode("utf-8", "replace")
    return HttpRpcError(code, message or f"HTTP {status}")


def _transport(exc: BaseException, endpoint: str) -> HttpRpcError:
    """A failure of the connection itself, said so that a person can act on it."""
    _ssl = sys.modules.get("ssl")  # loaded whenever an ssl error can happen

    if isinstance(exc, TimeoutError):
        return HttpRpcError(StatusCode.DEADLINE_EXCEEDED, f"{endpoint}: no answer in time")
    if _ssl is not None and isinstance(exc, _ssl.SSLCertVerificationError):
        return HttpRpcError(
            StatusCode.UNAVAILABLE,
            f"{endpoint}: its certificate is not from the CA given: {exc.verify_message}",
        )
    if _ssl is not None and isinstance(exc, _ssl.SSLError):
        return HttpRpcError(StatusCode.UNAVAILABLE, f"{endpoint}: TLS failed ({exc.reason or exc})")
    if isinstance(exc, ConnectionRefusedError):
        return HttpRpcError(
            StatusCode.UNAVAILABLE, f"{endpoint}: nothing listens there (connection refused)"
        )
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
        return HttpRpcError(StatusCode.UNAVAILABLE, f"{endpoint}: the connection was closed")
    if isinstance(exc, OSError):
        return HttpRpcError(StatusCode.UNAVAILABLE, f"{endpoint}: {exc.strerror or exc}")
    return HttpRpcError(StatusCode.UNAVAILABLE, f"{endpoint}: {exc}")


class HttpWire:
    """The gateway's wire: what :mod:`convergent.world.etcd` needs of it."""

    require_leader: tuple[tuple[str, str], ...] = (("Grpc-Metadata-Hasleader", "true"),)
    eof = EOF
    rpc_error = HttpRpcError
    retryable = frozenset(  # UNAUTHENTICATED: a token etcd forgot; the retry signs in
        {StatusCode.UNAUTHENTICATED, StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED}
        | {StatusCode.CANCELLED, StatusCode.UNKNOWN, StatusCode.INTERNAL}
    )
    not_found = StatusCode.NOT_FOUND
    delete = "DELETE"
    name = "http"

    def __init__(
        self,
        context: ssl.SSLContext | None,
        server_name: str | None,
        user: tuple[str, str] | None = None,
    ) -> None:
        self.rpc = _Rpc()
        self.context = context
        self.server_name = server_name
        self.user = user  # (name, password): signs in for a token (never logged)
        self.token: str | None = None  # etcd's auth token, once the user signed in
        self._signing = asyncio.Lock()

    def forget(self, token: str | None) -> None:
        """etcd no longer knows ``token``: the next request signs in again."""
        if token is not None and self.token == token:
            self.token = None

    async def sign_in(self, conn: HttpConnection, bound: float | None, stale: str | None) -> None:
        """Get a token for ``user`` (again, when ``stale`` is the one etcd refused)."""
        if self.user is None:
            return
        async with self._signing:
            if self.token is not None and self.token != stale:
                return  # another request signed in meanwhile
            self.token = None
            name, password = self.user
            data = await conn.post(
                "/v3/auth/authenticate", {"name": name, "password": password}, bound, signed=False
            )
            self.token = str(msgspec.json.decode(data).get("token") or "") or None

    def connect(self, endpoint: str) -> HttpConnection:
        return HttpConnection(self, endpoint)


class HttpConnection:
    """Kept-alive HTTP/1.1 connections to one endpoint, and the services over them."""

    def __init__(self, wire: HttpWire, endpoint: str) -> None:
        self.wire = wire
        self.endpoint = endpoint  # checked by etcdwire.load_wire: [scheme://]host:port
        where = endpoint.partition("://")[2] if "://" in endpoint else endpoint
        host, _, port = where.rstrip("/").rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        plain = endpoint.startswith("http://")
        self.context = None if plain else wire.context
        self.closed = False
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()
        self.kv = self.lease = self.watch = self.cluster = self.auth = self.maintenance = _Service(
            self
        )

    # -- connections ---------------------------------------------------------------

    async def dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection to the endpoint (bounded by ``CONNECT_TIMEOUT``)."""
        if self.closed:
            raise ConnectionError(f"{self.endpoint}: the connection was closed")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.context,
                    server_hostname=(self.wire.server_name or self.host) if self.context else None,
                    limit=1 << 20,
                )
        except (OSError, TimeoutError) as exc:
            raise _transport(exc, self.endpoint) from None
        http1.tune(writer)
        self._open.add(writer)
        return reader, writer

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()

    def _keep(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.closed or len(self._idle) >= IDLE_KEPT:
            self._drop(writer)
        else:
            self._idle.append((reader, writer))

    def request_bytes(
        self,
        path: str,
        body: object,
        headers: Sequence[tuple[str, str]] = (),
        *,
        signed: bool = True,
    ) -> bytes:
        data = msgspec.json.encode(body)  # bytes go as base64, as etcd wants them
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
        ]
        if self.wire.token and signed:
            lines.append(f"Authorization: {self.wire.token}")
        lines += [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + data

    async def post(
        self, path: str, body: object, bound: float | None, *, signed: bool = True
    ) -> bytes:
        """``POST body`` to ``path``; the answer's body (200) or HttpRpcError. With a
        user, signs in first, and once more when etcd no longer knows the token."""
        wire = self.wire
        if not signed or wire.user is None:
            return await self._post(path, body, bound, signed=signed)
        if wire.token is None:
            await wire.sign_in(self, bound, None)
        token = wire.token
        try:
            return await self._post(path, body, bound, signed=True)
        except HttpRpcError as exc:
            if exc.code() != StatusCode.UNAUTHENTICATED and "auth token" not in exc.details():
                raise
        await wire.sign_in(self, bound, token)  # expired, or the member restarted
        return await self._post(path, body, bound, signed=True)

    async def _post(self, path: str, body: object, bound: float | None, *, signed: bool) -> bytes:
        message = self.request_bytes(path, body, signed=signed)
        for attempt in (0, 1):
            reused = bool(self._idle) and attempt == 0
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(bound):
                    reader, writer = self._idle.pop() if reused else await self.dial()
                    writer.write(message)
                    status, headers = await http1.head(reader)
                    data, again = await http1.body(reader, headers)
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
                if writer is not None:
                    self._drop(writer)
                if reused and http1.unanswered(exc):
                    continue  # the member closed an idle connection: once more, anew
                raise _transport(exc, self.endpoint) from None
            except BaseException:
                if writer is not None:
                    self._drop(writer)
                raise
            if again:
                self._keep(reader, writer)
            else:
                self._drop(writer)
            if status != 200:
                raise _error(data, status)
            return data
        raise AssertionError("unreachable")

    async def close(self, grace: float | None = None) -> None:
        """Close every connection: streams end (their ``read`` raises), a request
        under way fails and is retried by its caller on the current endpoint."""
        self.closed = True
        self._idle.clear()
        for writer in list(self._open):
            self._drop(writer)

    def dropped(self) -> bool:
        """Closing never cancels a task here (streams raise): always False."""
        return False


class _Service:
    """``conn.kv.Put(request, timeout=...)`` and the streams, by method name."""

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn

    def __getattr__(self, method: str) -> Any:
        try:
            path, streaming = _PATHS[method]
        except KeyError:
            raise AttributeError(f"etcd's gateway has no {method} here") from None
        conn = self._conn
        if method == "LeaseKeepAlive":
            return lambda: _KeepAlive(conn, path)
        if streaming:
            return lambda metadata=(): _Stream(conn, path, metadata)

        # named as gRPC's stubs name it: the world calls both wires alike
        async def call(request: Request, timeout: float | None = None) -> Any:  # noqa: ASYNC109
            data = await conn.post(path, request, timeout)
            if method == "Range":
                return _RANGE.decode(data)
            return Message(msgspec.json.decode(data))

        return call


class _KeepAlive:
    """LeaseKeepAlive as the world uses it (write one request, read its answer): one
    ``POST /v3/lease/keepalive`` per pair."""

    def __init__(self, conn: HttpConnection, path: str) -> None:
        self._conn = conn
        self._path = path
        self._sent: list[Request] = []

    async def write(self, request: Request) -> None:
        self._sent.append(request)

    async def read(self) -> Any:
        if not self._sent:
            return EOF
        data = await self._conn.post(self._path, self._sent.pop(0), None)
        line = data.split(b"\n", 1)[0]
        said = msgspec.json.decode(line) if line.strip() else {}
        if "error" in said:
            raise _error(line, 200)
        return Message(said.get("result", {})) if said else EOF

    def cancel(self) -> None:
        self._sent.clear()


class _KeyValue(msgspec.Struct):
    """A watch event's key and value (base64 in the JSON: bytes here)."""

    key: bytes = b""
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0


class _Event(msgspec.Struct):
    type: str = "PUT"  # etcd leaves out the default
    kv: _KeyValue = msgspec.field(default_factory=_KeyValue)


class _Header(msgspec.Struct):
    revision: int = 0


class _WatchAnswer(msgspec.Struct):
    """One answer of a watch stream, read like its protobuf message (the fields the
    world reads; int64s come as strings: decoded in lax mode)."""

    header: _Header = msgspec.field(default_factory=_Header)
    events: list[_Event] = msgspec.field(default_factory=list)
    created: bool = False
    canceled: bool = False
    cancel_reason: str = ""
    compact_revision: int = 0


class _WatchLine(msgspec.Struct):
    result: _WatchAnswer | None = None


class _RangeAnswer(msgspec.Struct):
    """A Range answer (a prefix read of every host's keys: ~600 of them in W9b)."""

    header: _Header = msgspec.field(default_factory=_Header)
    kvs: list[_KeyValue] = msgspec.field(default_factory=list)
    count: int = 0
    more: bool = False


_WATCH = msgspec.json.Decoder(_WatchLine, strict=False)  # a watch answer without Message
_RANGE = msgspec.json.Decoder(_RangeAnswer, strict=False)


class _Stream:
    """A server stream (a watch) on a connection of its own."""

    def __init__(self, conn: HttpConnection, path: str, metadata: Sequence[tuple[str, str]]):
        self._conn = conn
        self._path = path
        self._headers = tuple(metadata)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = b""
        self._chunked = True
        self._began = False
        self._done = False
        self._token: str | None = None

    async def write(self, request: Request) -> None:
        if self._writer is not None:
            raise ConnectionError("the gateway takes one request per stream")
        conn = self._conn
        if conn.wire.user is not None and conn.wire.token is None:
            await conn.wire.sign_in(conn, CONNECT_TIMEOUT, None)
        self._token = conn.wire.token
        self._reader, self._writer = await conn.dial()
        self._writer.write(conn.request_bytes(self._path, request, self._headers))

    async def read(self) -> Any:
        reader = self._reader
        if reader is None or self._done:
            return EOF
        try:
            if not self._began:
                self._began = True
                status, headers = await http1.head(reader)
                if status != 200:
                    data, _ = await http1.body(reader, headers)
                    raise _error(data, status)
                self._chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            while b"\n" not in self._buffer:
                more = await http1.chunk(reader) if self._chunked else await reader.read(1 << 16)
                if not more:
                    self._done = True
                    self.cancel()
                    if self._buffer.strip():
                        break
                    return EOF
                self._buffer += more
        except HttpRpcError:
            self.cancel()
            raise
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            self.cancel()
            raise _transport(exc, self._conn.endpoint) from None
        line, _, self._buffer = self._buffer.partition(b"\n")
        with contextlib.suppress(ValueError):  # an error, or a cut line: read as below
            typed = _WATCH.decode(line).result
            if typed is not None and not typed.canceled:
                return typed
        try:
            said = msgspec.json.decode(line)
        except ValueError as exc:  # a line cut off where the stream ended
            self.cancel()
            raise _transport(exc, self._conn.endpoint) from None
        if "error" in said:
            self.cancel()
            raise _error(line, 200)
        result = said.get("result", said)
        reason = str(result.get("cancel_reason", ""))
        if result.get("canceled") and "auth token" in reason:  # etcd forgot the token
            self.cancel()
            self._conn.wire.forget(self._token)
            raise HttpRpcError(StatusCode.UNAUTHENTICATED, reason)
        return Message(result)

    def cancel(self) -> None:
        writer = self._writer
        if writer is not None:
            self._conn._drop(writer)
            self._done = True


def dial(
    context: ssl.SSLContext | None,
    server_name: str | None = None,
    user: tuple[str, str] | None = None,
) -> HttpWire:
    """The gateway's wire, with ``context`` for ``https://`` endpoints and ``user``
    (name, password) to sign in with when etcd's authentication is on."""
    return HttpWire(context, server_name, user)
