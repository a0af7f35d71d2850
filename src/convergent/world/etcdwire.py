"""The wire to etcd, for :mod:`convergent.world.etcd`: the seam (:class:`Wire`,
:class:`Connection`) and its two sides.

- ``http`` (:mod:`convergent.world.etcdhttp`): etcd's JSON gateway over HTTP/1.1 with
  the standard library. The default: it costs an agent ~0.05 s of CPU and ~20 MiB less.
- ``grpc``: gRPC channels and the etcd v3 stubs (``aetcd.rpc``: generated from etcd's
  ``rpc.proto``), imported by :func:`load_wire` only. Chosen when the agent's identity
  is its client certificate (a :class:`Tls` with ``cert``): etcd takes the user from
  the certificate's common name over gRPC only, and refuses gateway clients whose
  certificate has one once its authentication is on (convergent's TLS clusters).

``load_wire(..., wire="grpc"|"http")``, or ``CONVERGENT_ETCD_WIRE``, chooses one by
hand. Importing this module costs nothing. Endpoints are ``host:port``,
``http://host:port`` (plaintext) or ``https://host:port`` (TLS: with :class:`Tls`
given, its CA and client certificate; without, the system's CAs).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from convergent.world.base import WorldError

if TYPE_CHECKING:  # pathlib is not imported at run time: ~3 ms of an agent's start
    import ssl
    from pathlib import Path

__all__ = [
    "WIRE_ENV",
    "Connection",
    "GrpcConnection",
    "GrpcWire",
    "Tls",
    "Wire",
    "load_wire",
    "prefix_end",
    "target",
    "text",
    "wire_name",
]

WIRE_ENV = "CONVERGENT_ETCD_WIRE"  # "http" or "grpc": the wire, whatever the TLS

# gRPC keepalive pings find a dead peer on an idle stream; etcd refuses pings closer
# than 5 s apart (--grpc-keepalive-min-time) and pings without a stream.
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # a prefix read or a lease's expiry (every key of a dead agent in one watch reply)
    # may pass gRPC's default 4 MiB
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


class Tls(msgspec.Struct, frozen=True):
    """TLS to the etcd members: ``ca`` checks their certificates; ``cert``/``key`` (PEM)
    are this agent's client certificate for mutual TLS; ``server_name`` is the name the
    members' certificates are checked against when it is not the endpoint's host."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


def target(endpoint: str) -> tuple[str, bool | None]:
    """``(host:port, TLS?)`` of an endpoint; TLS None when the URL does not say."""
    secure: bool | None = None
    rest = endpoint
    for scheme, tls in (("http://", False), ("https://", True)):
        if endpoint.startswith(scheme):
            rest, secure = endpoint[len(scheme) :], tls
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in rest:
        raise WorldError(
            f"etcd endpoint {endpoint!r} is not host:port, http://host:port or https://host:port"
        )
    return rest, secure


def prefix_end(prefix: str) -> tuple[bytes, bytes]:
    """``(key, range_end)`` of every key that starts with ``prefix`` (all keys for "")."""
    start = prefix.encode()
    if not start:
        return b"\0", b"\0"
    end = bytearray(start)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return start, b"\0"
    end[-1] += 1
    return start, bytes(end)


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class Connection(Protocol):
    """One endpoint and etcd's services over it (``kv``, ``lease``, ``watch``,
    ``cluster``, ``auth``, ``maintenance``: calls named as in etcd's ``rpc.proto``)."""

    endpoint: str
    closed: bool
    kv: Any
    lease: Any
    watch: Any
    cluster: Any
    auth: Any
    maintenance: Any

    async def close(self, grace: float | None = None) -> None: ...

    def dropped(self) -> bool: ...


class Wire(Protocol):
    """What the etcd world needs of a wire: requests (``rpc.PutRequest(...)``), the
    error class and its retryable codes, the end of a stream, connections."""

    name: str
    rpc: Any
    eof: Any
    rpc_error: Any
    retryable: frozenset[Any]
    not_found: Any
    delete: Any
    require_leader: tuple[tuple[str, str], ...]

    def connect(self, endpoint: str) -> Connection: ...


class GrpcConnection:
    """One gRPC channel to one endpoint and the stubs over it."""

    def __init__(self, endpoint: str, channel: Any, rpc: Any) -> None:
        self.endpoint = endpoint
        self.channel = channel
        self.kv = rpc.KVStub(channel)
        self.lease = rpc.LeaseStub(channel)
        self.watch = rpc.WatchStub(channel)
        self.cluster = rpc.ClusterStub(channel)
        self.auth = rpc.AuthStub(channel)
        self.maintenance = rpc.MaintenanceStub(channel)

    closed = False

    async def close(self, grace: float | None = None) -> None:
        """Close the channel: its calls still running get ``grace`` seconds, then they
        end (with asyncio.CancelledError: see :meth:`dropped`)."""
        self.closed = True
        await self.channel.close(grace)

    def dropped(self) -> bool:
        """Whether a CancelledError just caught came from this channel's closing rather
        than from the task's own cancellation."""
        task = asyncio.current_task()
        return self.closed and task is not None and not task.cancelling()


class GrpcWire:
    """What the etcd world needs of grpc, loaded once per world."""

    name = "grpc"
    require_leader: tuple[tuple[str, str], ...] = (
        ("hasleader", "true"),
    )  # etcd ends a watch whose member has none

    def __init__(self, grpc: Any, rpc: Any, credentials: Any, server_name: str | None) -> None:
        self.grpc = grpc
        self.rpc = rpc
        self.eof = grpc.aio.EOF
        self.rpc_error: Any = grpc.aio.AioRpcError
        code = grpc.StatusCode
        self.retryable = frozenset(
            {code.UNAVAILABLE, code.DEADLINE_EXCEEDED, code.CANCELLED, code.UNKNOWN, code.INTERNAL}
        )
        self.not_found = code.NOT_FOUND
        self.delete = rpc.Event.DELETE
        self._credentials = credentials
        self._options: list[tuple[str, int | str]] = list(_CHANNEL_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))

    def connect(self, endpoint: str) -> GrpcConnection:
        where, secure = target(endpoint)
        if secure is False or self._credentials is None:
            channel = self.grpc.aio.insecure_channel(where, options=self._options)
        else:
            channel = self.grpc.aio.secure_channel(where, self._credentials, options=self._options)
        return GrpcConnection(endpoint, channel, self.rpc)


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise WorldError(f"cannot read the {what} {path}: {exc.strerror}") from None


def wire_name(tls: Tls | None, wire: str | None = None) -> str:
    """The wire for ``tls``: ``wire``, else ``$CONVERGENT_ETCD_WIRE``, else ``grpc``
    when the agent has a client certificate (its identity) and ``http`` otherwise."""
    chosen = wire or os.environ.get(WIRE_ENV) or ""
    if chosen and chosen not in ("http", "grpc"):
        raise WorldError(f"{WIRE_ENV}={chosen!r}: the etcd wire is 'http' or 'grpc'")
    if chosen:
        return chosen
    return "grpc" if tls is not None and tls.cert is not None else "http"


def load_wire(
    endpoints: Sequence[str],
    tls: Tls | None,
    wire: str | None = None,
    user: tuple[str, str] | None = None,
) -> Wire:
    """The wire to ``endpoints`` (see :func:`wire_name`): for grpc, import grpc and the
    stubs and make the channel credentials; for http, the ssl context. ``user`` (name,
    password): etcd's password authentication, over the gateway's wire only."""
    schemes = {target(endpoint)[1] for endpoint in endpoints}
    if tls is not None and False in schemes:
        raise WorldError(
            "TLS is set but an etcd endpoint is http://: name them https:// (or host:port)"
        )
    if tls is not None and (tls.cert is None) != (tls.key is None):
        raise WorldError("a client certificate needs its key, and a key its certificate")
    name = "http" if user is not None and wire is None else wire_name(tls, wire)
    if name == "http":
        from convergent.world.etcdhttp import dial

        context = _ssl_context(tls) if tls is not None or True in schemes else None
        return dial(context, tls.server_name if tls else None, user)
    if user is not None:
        raise WorldError("etcd's password authentication goes over the http wire, not grpc")
    return _load_grpc(schemes, tls)


def _ssl_context(tls: Tls | None) -> ssl.SSLContext:
    import ssl

    try:
        if tls is None:
            context = ssl.create_default_context()
        else:
            context = ssl.create_default_context(cafile=str(tls.ca))
            if tls.cert is not None and tls.key is not None:
                context.load_cert_chain(str(tls.cert), str(tls.key))
    except OSError as exc:
        raise WorldError(f"cannot read the TLS files {tls}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise WorldError(f"the TLS files {tls} are not usable: {exc.reason or exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_grpc(schemes: set[bool | None], tls: Tls | None) -> GrpcWire:
    try:
        import grpc
        import grpc.aio
        from aetcd import rpc
    except ImportError as exc:
        raise WorldError(
            f"the etcd world needs the aetcd package and grpcio ({exc}); "
            "install them: pip install 'aetcd>=1.0'"
        ) from None
    credentials = None
    if tls is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca, "CA certificate"),
            private_key=_read(tls.key, "client key"),
            certificate_chain=_read(tls.cert, "client certificate"),
        )
    elif True in schemes:
        credentials = grpc.ssl_channel_credentials()
    return GrpcWire(grpc, rpc, credentials, tls.server_name if tls else None)
