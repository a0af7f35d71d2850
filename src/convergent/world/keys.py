"""Where things live in the world: the key layout every backend and every host shares.

Everything is under ``/convergent/``. A host writes only under its own prefix,
``/convergent/hosts/HOST/`` (:func:`host_key`), and its own converged key, so that with
etcd's RBAC on a host's credentials can be limited to them, and one host can never
overwrite another's data::

    /convergent/hosts/HOST/alive            leased: "alive" while HOST's agent runs
    /convergent/converged/HOST              leased: "1" (converged) or "0"
    /convergent/hosts/HOST/exports/KIND[NAME]  an exported resource (JSON: kind, name,
                                            params, meta)
    /convergent/hosts/HOST/values/NAME      a ``value`` kind's published value
    /convergent/hosts/HOST/kv/KEY           a ``kv`` kind's key (read by any host)
    /convergent/locks/NAME/LEASE            the contenders for lock NAME (etcd: one key
                                            per session, the oldest revision holds it)

The converged keys live apart from the hosts' prefixes: they flip at every new graph
of every agent, and an agent that collects watches ``/convergent/hosts/`` for the
exports; only an agent that waits for the others (``--converged-timeout`` in a cluster)
or shows them (the web view) watches ``/convergent/converged/``.

A resource name may contain ``/`` (a file's path): it is always the last part of a key,
so a prefix read of ``.../exports/`` still finds every export of one host. Host names
are checked (:func:`check_hostname`): never empty, no ``/``, no whitespace or control
characters, at most 253 characters.
"""

from __future__ import annotations

__all__ = [
    "ALIVE",
    "CONVERGED_KEYS",
    "EXPORTS",
    "HOSTS",
    "KV",
    "LOCKS",
    "ROOT",
    "STATUS_ALIVE",
    "VALUES",
    "alive_key",
    "check_hostname",
    "converged_key",
    "export_key",
    "host_key",
    "host_prefix",
    "kv_key",
    "lock_prefix",
    "split_converged_key",
    "split_host_key",
    "value_key",
]

ROOT = "/convergent/"
HOSTS = ROOT + "hosts/"
CONVERGED_KEYS = ROOT + "converged/"
LOCKS = ROOT + "locks/"

# the parts under a host's prefix
ALIVE = "alive"
EXPORTS = "exports"
VALUES = "values"
KV = "kv"

STATUS_ALIVE = "alive"
"""What an agent's ``alive`` key holds while it runs (a status in ``members()``)."""

_MAX_HOSTNAME = 253


def check_hostname(host: str) -> str:
    """``host`` when it can name a host in the world; else ValueError saying why."""
    if not host:
        raise ValueError("the host name is empty; give one with --hostname")
    if len(host) > _MAX_HOSTNAME:
        raise ValueError(f"the host name is longer than {_MAX_HOSTNAME} characters")
    bad = [c for c in host if c == "/" or c.isspace() or not c.isprintable()]
    if bad:
        raise ValueError(
            f"the host name {host!r} contains {bad[0]!r}; use letters, digits, '.', '-', '_'"
        )
    return host


def host_prefix(host: str) -> str:
    """``/convergent/hosts/HOST/``: everything ``host`` writes is under it."""
    return f"{HOSTS}{check_hostname(host)}/"


def host_key(host: str, *parts: str) -> str:
    """``/convergent/hosts/HOST/PART/PART...``; every part non-empty (the last may
    contain ``/``)."""
    if not parts or any(not part for part in parts):
        raise ValueError(f"a key of host {host!r} needs non-empty parts, got {parts!r}")
    return host_prefix(host) + "/".join(parts)


def split_host_key(key: str) -> tuple[str, str] | None:
    """``(host, rest)`` for a key under ``/convergent/hosts/``, else None."""
    if not key.startswith(HOSTS):
        return None
    host, sep, rest = key[len(HOSTS) :].partition("/")
    if not host or not sep:
        return None
    return host, rest


def alive_key(host: str) -> str:
    return host_key(host, ALIVE)


def converged_key(host: str) -> str:
    """``/convergent/converged/HOST``: whether HOST's agent is converged ("1" or "0")."""
    return CONVERGED_KEYS + check_hostname(host)


def split_converged_key(key: str) -> str | None:
    """The host of a key under ``/convergent/converged/``, else None."""
    if not key.startswith(CONVERGED_KEYS):
        return None
    host = key[len(CONVERGED_KEYS) :]
    return host if host and "/" not in host else None


def export_key(host: str, kind: str, name: str) -> str:
    return host_key(host, EXPORTS, f"{kind}[{name}]")


def value_key(host: str, name: str) -> str:
    return host_key(host, VALUES, name)


def kv_key(host: str, key: str) -> str:
    return host_key(host, KV, key)


def lock_prefix(name: str) -> str:
    """``/convergent/locks/NAME/``: the contenders' keys of lock ``name``."""
    if not name or "/" in name:
        raise ValueError(f"a lock name is non-empty and has no '/', got {name!r}")
    return f"{LOCKS}{name}/"
