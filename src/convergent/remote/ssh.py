"""SSH connections to the remote hosts (asyncssh, imported on first use).

Authentication: the keys of ``~/.ssh`` and an ssh agent (``$SSH_AUTH_SOCK``), as OpenSSH
offers them, or only ``--identity FILE``. Host keys are verified against
``~/.ssh/known_hosts``: an unknown host is refused unless ``accept_new`` (then its key is
added to that file), and a host whose key changed is always refused. Every error is a
:class:`~convergent.remote.urls.RemoteError` that names the host and says what to do.

Keepalives (every ``KEEPALIVE`` s, ``KEEPALIVE_COUNT`` unanswered) notice a host whose
link went down: its connection ends and the run reports it by name.
"""

from __future__ import annotations

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
    "SshOptions",
    "connect",
    "known_hosts_path",
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


def load_asyncssh() -> Any:
    """asyncssh, imported now (its import warns about DSA: quietened)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import asyncssh

    return asyncssh


def known_hosts_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".ssh", "known_hosts")


def _known_hosts_text() -> str:
    try:
        with open(known_hosts_path(), encoding="utf-8", errors="replace") as f:
            return f.read(1 << 22)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise RemoteError(f"cannot read {known_hosts_path()}: {exc.strerror or exc}") from None


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _client_class(asyncssh: Any, target: Target, options: SshOptions, text: str) -> Any:
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
            path = known_hosts_path()
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode() if line.endswith("\n") else f"{line}\n".encode())
            finally:
                os.close(fd)
            Client.added = True
            return True

    return Client


async def connect(
    target: Target, options: SshOptions, tunnel: asyncssh.SSHClientConnection | None = None
) -> asyncssh.SSHClientConnection:
    """A logged-in connection to ``target`` (through ``tunnel``: the connection of the
    host it is reached from); RemoteError says why not."""
    asyncssh = load_asyncssh()
    client = _client_class(asyncssh, target, options, _known_hosts_text())
    where = f"{target.name} ({target.url})"
    kwargs: dict[str, Any] = {
        "port": target.port,
        "username": target.user,
        "known_hosts": asyncssh.import_known_hosts(_known_hosts_text()),
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
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    try:
        return await asyncssh.connect(target.host, **kwargs)  # type: ignore[no-any-return]
    except asyncssh.HostKeyNotVerifiable:
        if client.changed:
            raise RemoteError(
                f"{where}: its host key is not the one {known_hosts_path()} holds for it: "
                "the host was reinstalled, or someone is in the middle; check with its "
                f"administrator, then remove the old key (ssh-keygen -R "
                f"'{_host_entry(target.host, target.port)}')"
            ) from None
        raise RemoteError(
            f"{where}: unknown host key (not in {known_hosts_path()}); check it and add it "
            f"(ssh-keyscan -p {target.port} {target.host}), or give --accept-new-host-keys "
            "to trust it on first use"
        ) from None
    except asyncssh.PermissionDenied:
        how = (
            f"the key {options.identity}" if options.identity else "the keys of ~/.ssh or the agent"
        )
        raise RemoteError(
            f"{where}: {target.user}@{target.host} refused {how}; add the public key to the "
            "host's authorized_keys, or give --identity FILE with a key it accepts"
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
