"""The web view's options: ``--http ADDR:PORT`` and ``--http-token FILE``.

Standard library only: the command line reads these before anything of the web view is
imported. An address other than loopback needs a token (:func:`check_options`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

__all__ = [
    "MIN_TOKEN",
    "HttpOptions",
    "check_options",
    "is_loopback",
    "parse_address",
    "read_token",
]

MIN_TOKEN = 16  # characters: shorter is refused (guessable)
_MAX_TOKEN_FILE = 4096


@dataclass(frozen=True)
class HttpOptions:
    """Where the web view listens and the token it asks for (None: no token)."""

    host: str
    port: int
    token: str | None = None


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``127.0.0.1:8080``, ``[::1]:8080``, ``:8080`` for 127.0.0.1) as
    (host, port); port 0 picks a free one. Raises ValueError saying what to write."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"{text!r}: give ADDR:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be between 0 and 65535")
    if not host.replace(".", "").replace(":", "").replace("-", "").isalnum():
        raise ValueError(f"{text!r}: {host!r} is not an address or a host name")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The token in the file ``path`` (its first line, surrounding blanks removed).

    The file must be a regular file readable by its owner only (``chmod 600``): a token on
    the command line would be visible to every user in ``ps``. Raises ValueError saying
    what is wrong and how to fix it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"the token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ValueError(f"the token file {path} can be read by others: chmod 600 {path}")
        data = os.read(fd, _MAX_TOKEN_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_TOKEN_FILE:
        raise ValueError(f"the token file {path} is larger than {_MAX_TOKEN_FILE} bytes")
    lines = data.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise ValueError(
            f"the token in {path} must be one line of {MIN_TOKEN} or more printable "
            "characters without spaces (e.g. from: head -c 24 /dev/urandom | base64)"
        )
    return token


def check_options(address: str, token_file: str | None) -> HttpOptions:
    """The options of a run, checked: an address off loopback needs a token. Raises
    ValueError naming the option."""
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise ValueError(f"--http: {exc}") from None
    token = None
    if token_file is not None:
        try:
            token = read_token(token_file)
        except ValueError as exc:
            raise ValueError(f"--http-token: {exc}") from None
    elif not is_loopback(host):
        raise ValueError(
            f"--http {address}: an address other than loopback (127.0.0.1, ::1) needs "
            "--http-token FILE, a file (mode 600) holding the token browsers must send"
        )
    return HttpOptions(host, port, token)
