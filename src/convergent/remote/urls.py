"""Where the remote hosts are: ``ssh://[USER@]HOST[:PORT][#NAME]`` URLs.

- ``NAME`` (after ``#``) is the host's name in the world (its agent's ``--hostname``);
  without it, ``HOST``. Two targets may not share a name.
- A password in the URL (``ssh://root:secret@host``) is refused: it would sit in shell
  histories, process lists and policies. Keys (``~/.ssh``, an agent, ``--identity``) are
  the way in.
- ``via:``: ``ssh://root@10.0.0.5 via:ssh://root@10.0.0.1`` (one string): the second
  host bootstraps the first (hierarchical fan-out, :mod:`convergent.remote.relay`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from convergent.errors import ConvergentError

__all__ = ["RemoteError", "Target", "parse_target", "parse_targets"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$")


class RemoteError(ConvergentError):
    """A remote host cannot be reached, trusted, bootstrapped or run; names the host."""


@dataclass(frozen=True)
class Target:
    """One remote host: how to reach it and its name in the world."""

    host: str
    port: int = 22
    user: str = "root"
    name: str = ""
    via: Target | None = None  # reached from that host (it bootstraps this one)

    @property
    def url(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}{port}"

    def __str__(self) -> str:
        return self.name


def parse_target(text: str) -> Target:
    """One ``--remote`` value; RemoteError says what is wrong with it and what to write."""
    text = text.strip()
    first, sep, rest = text.partition(" via:")
    via = parse_target(rest) if sep else None
    parts = urlsplit(first)
    example = "ssh://root@10.0.0.2 or ssh://admin@web1.example:2222"
    if parts.scheme != "ssh" or not parts.hostname:
        raise RemoteError(f"--remote {first!r}: not an ssh:// URL; write it like {example}")
    if parts.password is not None:
        raise RemoteError(
            f"--remote {parts.scheme}://{parts.username}:***@{parts.hostname}: a password "
            "in a URL is refused (it ends up in histories, process lists and policies); "
            "use a key (~/.ssh, an ssh agent, or --identity FILE)"
        )
    if parts.path not in ("", "/") or parts.query:
        raise RemoteError(f"--remote {first!r}: no path or query in the URL; write {example}")
    try:
        port = parts.port or 22
    except ValueError:
        raise RemoteError(
            f"--remote {first!r}: the port must be a number from 1 to 65535"
        ) from None
    user = unquote(parts.username or "root")
    if not _USER.match(user):
        raise RemoteError(f"--remote {first!r}: {user!r} is not a user name")
    name = unquote(parts.fragment) or parts.hostname
    if not _NAME.match(name):
        raise RemoteError(
            f"--remote {first!r}: {name!r} cannot name a host in the world; add #NAME "
            "(letters, digits, '.', '_', '-')"
        )
    return Target(parts.hostname, port, user, name, via)


def parse_targets(texts: list[str]) -> list[Target]:
    """Every ``--remote``; two with the same name are refused."""
    targets = [parse_target(t) for t in texts]
    seen: dict[str, Target] = {}
    for target in targets:
        chain: Target | None = target
        while chain is not None:
            other = seen.get(chain.name)
            if other is not None and other != chain:
                raise RemoteError(
                    f"--remote: {other.url} and {chain.url} are both named {chain.name!r}; "
                    "give one another name with #NAME"
                )
            seen[chain.name] = chain
            chain = chain.via
    return targets
