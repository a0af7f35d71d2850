"""HTTP/1.1 framing for the etcd gateway's wire (:mod:`convergent.world.etcdhttp`): an
answer's head and body (by length, chunked, or to the end of the connection), the
socket's keepalive, and which failed requests may be sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["MAX_BODY", "body", "chunk", "head", "tune", "unanswered"]

MAX_BODY = 256 * 1024 * 1024  # bytes of one answer at most (a whole prefix read)
_KEEPALIVE = (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3))
_USER_TIMEOUT_MS = 8000


def tune(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _USER_TIMEOUT_MS)


def unanswered(exc: BaseException) -> bool:
    """Whether a request on a kept-alive connection failed with no byte of answer: the
    member had closed the idle connection (sent again on a new one). A request that got
    part of an answer is not sent again: etcd may have done it (a second lease)."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return not exc.partial
    return isinstance(exc, (ConnectionResetError, BrokenPipeError))


async def head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    """The status and headers (names lower case) of an answer."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def chunk(reader: asyncio.StreamReader) -> bytes:
    """The next chunk of a chunked body (b"" at its end)."""
    size_line = await reader.readuntil(b"\r\n")
    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
    if size > MAX_BODY:
        raise ConnectionError(f"a chunk of {size} bytes")
    data = await reader.readexactly(size + 2) if size else b""
    if not size:
        await reader.readuntil(b"\r\n")  # no trailers from etcd: the final empty line
    return data[:-2]


async def body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> tuple[bytes, bool]:
    """The whole body of an answer, and whether the connection may serve another."""
    again = headers.get(b"connection", b"").lower() != b"close"
    length = headers.get(b"content-length")
    if length is not None:
        size = int(length)
        if size > MAX_BODY:
            raise ConnectionError(f"an answer of {size} bytes")
        return await reader.readexactly(size), again
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while part := await chunk(reader):
            parts.append(part)
        return b"".join(parts), again
    parts = []  # neither: the body ends with the connection
    while part := await reader.read(1 << 16):
        parts.append(part)
        if sum(map(len, parts)) > MAX_BODY:
            raise ConnectionError("an answer past the size limit")
    return b"".join(parts), False
