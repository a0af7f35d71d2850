"""SSH connections to the remote hosts (asyncssh, imported on first use).

Authentication: the keys of ``~/.ssh`` and an ssh agent (``$SSH_AUTH_SOCK``), as OpenSSH
offers them, or only ``--identity FILE``. Host keys are verified against
``~/.ssh/known_hosts``: an unknown host is refused unless ``accept_new`` (then its key is
added to that file), and a host whose key changed is always refused. Every error is a
:class:`~convergent.remote.urls.RemoteError` that names the host and says what to do.

Hierarchical fan-out (``--remote-depth 2``, ``via:``): a first-level host connects to
the hosts behind it itself (:mod:`convergent.remote.relay`), with the initiator's ssh
agent forwarded to it (``forward_agent``) and the initiator's known_hosts lines for those
hosts (``known_hosts``); its errors name both hosts (``through``).

Keepalives (every ``KEEPALIVE`` s, ``KEEPALIVE_COUNT`` unanswered) notice a host whose
link went down: its connection ends and the run reports it by name.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from convergent.remote.urls import RemoteError, Target

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "CONNECT_TIMEOUT",
    "KEEPALIVE",
    "KEEPALIVE_COUNT",
    "LD_CACHE",
    "SshOptions",
    "connect",
    "find_library",
    "known_hosts_path",
    "known_lines",
    "load_asyncssh",
]

CONNECT_TIMEOUT = 15.0  # seconds to reach a host and log in
KEEPALIVE = 1.0  # seconds between keepalives on a quiet connection
KEEPALIVE_COUNT = 5  # unanswered keepalives before the connection counts as lost


@dataclass(frozen=True)
class SshOptions:
    """How to log in: ``identity`` (None: ~/.ssh and the agent), ``accept_new`` (trust
    and record a host key seen for the first time)."""

    identity: str | None = None
    accept_new: bool = False
    connect_timeout: float = CONNECT_TIMEOUT
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    forward_agent: str | None = None  # the agent socket to forward to the host
    through: str | None = None  # the name of the host this one connects from (a relay)


def load_asyncssh() -> Any:
    """asyncssh, imported now (its import warns about DSA: quietened).

    Its import looks for optional C libraries (liboqs, nettle) with
    ``ctypes.util.find_library``, which runs ``ldconfig -p`` and, for a library that is
    not there, ``gcc`` and ``ld``: up to seven processes, a tenth of a second of CPU,
    on every run. :func:`find_library` answers from ``/etc/ld.so.cache`` instead, as the
    dynamic loader would."""
    import ctypes.util

    real = ctypes.util.find_library
    ctypes.util.find_library = find_library
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import asyncssh
    finally:
        ctypes.util.find_library = real
    return asyncssh


LD_CACHE = "/etc/ld.so.cache"


def find_library(name: str) -> str | None:
    """``ctypes.util.find_library(name)`` for a library the dynamic loader knows (in
    ``/etc/ld.so.cache``, or in a directory of ``$LD_LIBRARY_PATH``): its file name,
    the versioned one first; None when it is in neither. Without a readable cache, the
    standard search."""
    import ctypes.util
    import re

    try:
        with open(LD_CACHE, "rb") as f:
            data = f.read(1 << 24)
    except OSError:
        data = b""
    if not data.startswith((b"glibc-ld.so.cache", b"ld.so-")):
        return ctypes.util.find_library(name)
    file = rf"lib{re.escape(name)}\.so(?:\.[0-9]+)*"
    found = {m.decode() for m in re.findall(rb"(?<![^\0/])(" + file.encode() + rb")\0", data)}
    for where in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":")):
        with contextlib.suppress(OSError):
            found.update(f for f in os.listdir(where) if re.fullmatch(file, f))
    return max(found, key=lambda f: (len(f), f)) if found else None


def known_hosts_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".ssh", "known_hosts")


def _known_hosts_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(1 << 22)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from None


def known_lines(targets: list[Target]) -> str:
    """The lines of ``~/.ssh/known_hosts`` that vouch for ``targets`` (hashed ones too):
    what a relay checks the hosts behind it against; no other host is disclosed."""
    asyncssh = load_asyncssh()
    kept = []
    for line in _known_hosts_text(known_hosts_path()).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            known = asyncssh.import_known_hosts(line)
        except (ValueError, asyncssh.KeyImportError):
            continue
        if any(any(known.match(t.host, t.host, t.port)[:3]) for t in targets):
            kept.append(line)
    return "".join(f"{line}\n" for line in kept)


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _client_class(asyncssh: Any, target: Target, options: SshOptions, text: str, path: str) -> Any:
    known = asyncssh.import_known_hosts(text)

    class Client(asyncssh.SSHClient):  # type: ignore[misc]
        """Asked only about a key known_hosts does not trust."""

        changed = False
        added = False

        def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
            trusted = known.match(host, addr, port)[0]
            if trusted:  # known under another key: changed, never accepted
                Client.changed = True
                return False
            if not options.accept_new:
                return False
            line = f"{_host_entry(target.host, target.port)} {key.export_public_key().decode()}"
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode() if line.endswith("\n") else f"{line}\n".encode())
            finally:
                os.close(fd)
            Client.added = True
            return True

    return Client


async def connect(target: Target, options: SshOptions) -> asyncssh.SSHClientConnection:
    """A logged-in connection to ``target``; RemoteError says why not."""
    asyncssh = load_asyncssh()
    path = options.known_hosts or known_hosts_path()
    text = _known_hosts_text(path)
    client = _client_class(asyncssh, target, options, text, path)
    where = f"{target.name} ({target.url})"
    if options.through is not None:
        where = f"{target.name} ({target.url}, reached from {options.through})"
    kwargs: dict[str, Any] = {
        "port": target.port,
        "username": target.user,
        "known_hosts": asyncssh.import_known_hosts(text),
        "client_factory": client,
        "connect_timeout": options.connect_timeout,
        "keepalive_interval": KEEPALIVE,
        "keepalive_count_max": KEEPALIVE_COUNT,
        "password": None,
        "kbdint_auth": False,
        "password_auth": False,
    }
    if options.identity is not None:
        try:
            kwargs["client_keys"] = [asyncssh.read_private_key(options.identity)]
        except (OSError, asyncssh.KeyImportError) as exc:
            raise RemoteError(f"--identity {options.identity}: {exc}") from None
        kwargs["agent_path"] = None
    if options.forward_agent is not None:
        kwargs["agent_forwarding"] = options.forward_agent
    try:
        return await asyncssh.connect(target.host, **kwargs)  # type: ignore[no-any-return]
    except asyncssh.HostKeyNotVerifiable:
        if client.changed:
            raise RemoteError(
                f"{where}: its host key is not the one {path} holds for it: "
                "the host was reinstalled, or someone is in the middle; check with its "
                f"administrator, then remove the old key (ssh-keygen -R "
                f"'{_host_entry(target.host, target.port)}')"
            ) from None
        scan = f"ssh-keyscan -p {target.port} {target.host}"
        known = known_hosts_path()
        if options.through is not None:
            scan = f"run {scan} on {options.through}, add its line to it"
            known = "the initiator's ~/.ssh/known_hosts"
        raise RemoteError(
            f"{where}: unknown host key (not in {known}); check it and add it ({scan}), "
            "or give --accept-new-host-keys to trust it on first use"
        ) from None
    except asyncssh.PermissionDenied:
        how = (
            f"the key {options.identity}" if options.identity else "the keys of ~/.ssh or the agent"
        )
        if options.through is not None:
            how = f"the keys of the ssh agent the initiator forwarded to {options.through}"
        raise RemoteError(
            f"{where}: {target.user}@{target.host} refused {how}; add the public key to the "
            "host's authorized_keys, or "
            + (
                "ssh-add on the initiator a key it accepts"
                if options.through is not None
                else "give --identity FILE with a key it accepts"
            )
        ) from None
    except asyncssh.DisconnectError as exc:
        raise RemoteError(f"{where}: the server hung up: {exc.reason}") from None
    except TimeoutError:
        raise RemoteError(
            f"{where}: no answer within {options.connect_timeout:g} s; is the host up and "
            "its port open?"
        ) from None
    except OSError as exc:
        raise RemoteError(f"{where}: cannot connect: {exc.strerror or exc}") from None
