"""etcd's HTTP side and one-off requests: what discovery and ``cluster status`` ask.

:func:`gateway` posts to etcd's JSON gateway (``/v3/...``, ``/version``) with Python's
``http.client`` in a thread (``ssl`` says exactly why a handshake failed);
:func:`rpc` makes one request on a wire of its own (:mod:`convergent.world.etcdwire`);
:func:`discover` finds the members of the cluster seeds belong to. An agent on a
plaintext cluster needs none of it: it discovers on its world's own connection
(:meth:`convergent.world.etcd.EtcdWorld.discover`). Part of
:mod:`convergent.world.cluster`, which re-exports every name here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from convergent.errors import ConvergentError

if TYPE_CHECKING:
    from convergent.world.tls import TLSFiles

__all__ = [
    "REQUEST_TIMEOUT",
    "ClusterError",
    "discover",
    "etcd_tls",
    "gateway",
    "member_list",
    "member_status",
    "rpc",
]

REQUEST_TIMEOUT = 5.0  # seconds one request to etcd's gateway may take


class ClusterError(ConvergentError):
    """The cluster cannot be started, found or reached; nothing was applied."""


def etcd_tls(tls: TLSFiles | None) -> Any:
    from pathlib import Path

    from convergent.world.etcd import Tls

    if tls is None:
        return None
    return Tls(ca=Path(tls.ca), cert=Path(tls.cert), key=Path(tls.key))


def _request(
    url: str, path: str, body: dict[str, Any] | None, tls: TLSFiles | None, timeout: float
) -> Any:
    import http.client
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 2379
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        if tls is None:
            raise ClusterError(f"{url} speaks TLS: this run has no certificate (--insecure?)")
        from convergent.world.tls import client_context

        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=client_context(tls)
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", path, msgspec.json.encode(body), headers)
        response = connection.getresponse()
        data = response.read(1 << 20)
        if response.status != 200:
            raise ClusterError(f"{url}{path}: etcd answered {response.status}: {data[:200]!r}")
        return msgspec.json.decode(data)
    except ssl.SSLCertVerificationError as exc:
        raise ClusterError(
            f"{url}: its certificate is not from our cluster CA ({tls.ca if tls else '-'}): "
            f"{exc.verify_message}; is this the right cluster? a join token from its "
            "first host brings its CA"
        ) from None
    except ssl.SSLError as exc:
        raise ClusterError(
            f"{url} refused our certificate ({exc.reason or exc}): it was not issued by "
            "that cluster's CA; get a join token from that cluster's first host"
        ) from None
    except ConnectionRefusedError:
        raise ClusterError(f"{url}: nothing listens there (connection refused)") from None
    except TimeoutError:
        raise ClusterError(f"{url}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ClusterError(f"{url}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ClusterError(f"{url}{path}: not etcd's answer ({exc})") from None
    finally:
        connection.close()


async def gateway(
    url: str,
    path: str,
    body: dict[str, Any] | None = None,
    tls: TLSFiles | None = None,
    bound: float = REQUEST_TIMEOUT,
) -> Any:
    """``GET path`` (``body`` None) or ``POST body`` to etcd's HTTP side at ``url``
    (``/version``, the JSON gateway's ``/v3/...``) and return the decoded answer;
    ClusterError names the URL and says what went wrong (refused, no answer, a
    certificate of another CA). Python's ``ssl`` says exactly why a handshake failed, so
    every first contact goes this way. (Once etcd's authentication is on, its gateway
    refuses clients with a certificate: :func:`rpc` asks over gRPC.)"""
    return await asyncio.to_thread(_request, url, path, body, tls, bound)


async def rpc(url: str, tls: TLSFiles | None, service: str, method: str) -> Any:
    """One etcd gRPC request without fields (``cluster``, ``MemberList``;
    ``maintenance``, ``Status``) to ``url``, bounded by ``REQUEST_TIMEOUT``."""
    from convergent.world.base import WorldError
    from convergent.world.etcdwire import load_wire

    try:
        wire = load_wire([url], etcd_tls(tls))
    except WorldError as exc:
        raise ClusterError(str(exc)) from None
    conn = wire.connect(url)
    try:
        request = getattr(wire.rpc, f"{method}Request")()
        call = getattr(getattr(conn, service), method)
        return await call(request, timeout=REQUEST_TIMEOUT)
    except wire.rpc_error as exc:
        raise ClusterError(f"{url}: {exc.code().name}: {exc.details()}") from None
    finally:
        await conn.close()


async def member_list(url: str, tls: TLSFiles | None) -> list[dict[str, Any]]:
    """The members of ``url``'s cluster: name, id, client and peer URLs."""
    reply = await rpc(url, tls, "cluster", "MemberList")
    return [
        {
            "name": m.name,
            "id": int(m.ID),
            "client_urls": list(m.clientURLs),
            "peer_urls": list(m.peerURLs),
        }
        for m in reply.members
    ]


async def member_status(url: str, tls: TLSFiles | None) -> dict[str, Any]:
    """The member at ``url``: its id, the leader it knows (0: none) and its errors."""
    reply = await rpc(url, tls, "maintenance", "Status")
    return {
        "id": int(reply.header.member_id),
        "leader": int(reply.leader),
        "errors": list(reply.errors),
    }


async def discover(
    seeds: tuple[str, ...] | list[str], tls: TLSFiles | None, bound: float = REQUEST_TIMEOUT
) -> list[str]:
    """The client URLs of every member of the cluster ``seeds`` belong to (asked of the
    first seed that answers); ClusterError naming every seed when none does."""
    failures: list[str] = []
    for seed in seeds:
        try:
            await gateway(seed, "/version", tls=tls, bound=bound)  # TLS errors, said clearly
            members = await member_list(seed, tls)
        except ClusterError as exc:
            failures.append(str(exc))
            continue
        urls: list[str] = []
        for member in members:
            for url in member["client_urls"]:
                if url not in urls:
                    urls.append(url)
        return urls or list(seeds)
    raise ClusterError(
        "no seed answered, so no cluster to join (nothing was applied):\n  " + "\n  ".join(failures)
    )
