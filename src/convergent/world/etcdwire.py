"""The wire to etcd: gRPC channels and the etcd v3 stubs, for :mod:`convergent.world.etcd`.

``grpc`` and the stubs (``aetcd.rpc``: generated from etcd's ``rpc.proto``) are imported
by :func:`load_wire` only, when an etcd world starts: importing this module costs
nothing. Endpoints are ``host:port``, ``http://host:port`` (plaintext) or
``https://host:port`` (TLS: with :class:`Tls` given, its CA and client certificate;
without, the system's CAs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convergent.world.base import WorldError

__all__ = ["Connection", "Tls", "Wire", "load_wire", "prefix_end", "target", "text"]

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


@dataclass(frozen=True)
class Tls:
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


class Connection:
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


class Wire:
    """What the etcd world needs of grpc, loaded once per world."""

    require_leader = (("hasleader", "true"),)  # etcd ends a watch whose member has none

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

    def connect(self, endpoint: str) -> Connection:
        where, secure = target(endpoint)
        if secure is False or self._credentials is None:
            channel = self.grpc.aio.insecure_channel(where, options=self._options)
        else:
            channel = self.grpc.aio.secure_channel(where, self._credentials, options=self._options)
        return Connection(endpoint, channel, self.rpc)


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise WorldError(f"cannot read the {what} {path}: {exc.strerror}") from None


def load_wire(endpoints: Sequence[str], tls: Tls | None) -> Wire:
    """Import grpc and the stubs; the channel credentials for ``endpoints``."""
    schemes = {target(endpoint)[1] for endpoint in endpoints}
    if tls is not None and False in schemes:
        raise WorldError(
            "TLS is set but an etcd endpoint is http://: name them https:// (or host:port)"
        )
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
        if (tls.cert is None) != (tls.key is None):
            raise WorldError("a client certificate needs its key, and a key its certificate")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca, "CA certificate"),
            private_key=_read(tls.key, "client key"),
            certificate_chain=_read(tls.cert, "client certificate"),
        )
    elif True in schemes:
        credentials = grpc.ssl_channel_credentials()
    return Wire(grpc, rpc, credentials, tls.server_name if tls else None)
