"""The HTTP side of ``download``: URLs as checked and shown, the TLS settings, the
request headers, the hash picked out of a checksum file, and the hash of a local file
(:func:`sha256_of`: a large one in a thread, so the event loop goes on)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from convergent.errors import ParamError

if TYPE_CHECKING:
    import ssl
    import threading

    import httpx

__all__ = [
    "check_url",
    "file_name",
    "is_sum",
    "origin",
    "pick_sum",
    "sha256_of",
    "shown_url",
    "ssl_context",
    "with_identity",
]

_HEX = frozenset("0123456789abcdefABCDEF")
_READ = 1 << 20
_THREAD_AT = 8 << 20  # bytes: a larger file is hashed in a thread while the loop goes on
_SSL: list[ssl.SSLContext] = []
# The body as the server sends it: what sha256 pins (as curl saves it), and never a
# small compressed answer inflated past max_size in memory before it is counted.
_IDENTITY = {"Accept-Encoding": "identity"}


def ssl_context() -> ssl.SSLContext:
    """The TLS settings of every download (httpx's: certifi's CA bundle), made once per
    process: a client is made per request, and loading the CA bundle is its dear part."""
    if not _SSL:
        import ssl

        import certifi

        _SSL.append(ssl.create_default_context(cafile=certifi.where()))
    return _SSL[0]


def with_identity(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers``, asking for the body as it is unless they ask for an encoding."""
    if any(name.lower() == "accept-encoding" for name in headers):
        return dict(headers)
    return {**_IDENTITY, **headers}


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def shown_url(url: str) -> str:
    """``url`` without its user, password, query and fragment (they may hold tokens)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{'?...' if parts.query else ''}"


def check_url(field: str, url: str) -> None:
    from urllib.parse import urlsplit

    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ParamError(field, "holds whitespace or a control character; percent-encode it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise ParamError(
            field,
            "is not a valid URL (a port that is not a number, or a bracket out of place; a "
            "password's / ? # @ must be percent-encoded); the URL is not shown: it may hold "
            "a password",
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParamError(field, f"{shown_url(url)!r} is not an http:// or https:// URL with a host")


def is_sum(text: str) -> bool:
    return len(text) == 64 and _HEX.issuperset(text)


def file_name(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path.rpartition("/")[2])


def pick_sum(text: str, url: str) -> str | None:
    """The SHA-256 in a checksum file for ``url``'s file name (or its only bare hash)."""
    name = file_name(url)
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split(None, 1)
        if not fields or not is_sum(fields[0]):
            continue
        other = fields[1].strip().lstrip("*") if len(fields) > 1 else ""
        found.append((fields[0].lower(), other))
    for digest, other in found:
        if other and (other == name or other.rpartition("/")[2] == name):
            return digest
    if len(found) == 1 and not found[0][1]:
        return found[0][0]
    return None


async def sha256_of(fd: int, size: int) -> str:
    """The SHA-256 of what ``fd`` (a regular file of ``size`` bytes) holds; it is closed.

    A file of ``_THREAD_AT`` bytes or more is read in a thread of its own, which owns
    the descriptor (hashlib lets go of the GIL): the agent's other resources, signals and
    drift go on meanwhile. A cancelled check stops it at its next read.
    """
    if size < _THREAD_AT:
        try:
            return _digest(fd, None)
        finally:
            os.close(fd)
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    stop = threading.Event()

    def settle(result: str | None, error: BaseException | None) -> None:
        if not done.done():
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result or "")

    def work() -> None:
        result, error = None, None
        try:
            result = _digest(fd, stop)
        except BaseException as exc:  # handed to the check that waits for it
            error = exc
        finally:
            os.close(fd)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="download hash", daemon=True).start()
    try:
        return await done
    finally:
        stop.set()


def _digest(fd: int, stop: threading.Event | None) -> str:
    import hashlib

    digest = hashlib.sha256()
    while chunk := os.read(fd, _READ):
        if stop is not None and stop.is_set():
            return ""
        digest.update(chunk)
    return digest.hexdigest()
