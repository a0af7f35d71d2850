"""Who may write what in the etcd world: etcd's RBAC, one role per host.

With TLS and ``--client-cert-auth``, etcd takes a client's user name from the common
name (CN) of its certificate; convergent's host certificates carry the host name there.
:func:`grant_host` gives host ``H`` the user ``H`` and the role ``convergent-host-H``:

- read and write ``/convergent/hosts/H/`` (its own prefix: alive, exports, values, kv)
  and ``/convergent/converged/H`` (that key only),
- read and write ``/convergent/locks/`` (every host contends for locks),
- read everything else under ``/convergent/`` (the other hosts' keys, members).

So a host can read every other host's data and write only its own, whatever its policy
or its code says. :func:`enable_auth` then turns authentication on: it makes etcd's
``root`` user and role, gives the ``root`` role to ``admin`` too (the agent that runs
the cluster: a member's host holds the data anyway), and enables auth. From then on only
``admin`` (or ``root``) can add hosts. Both are idempotent: run them at every start.

Each takes a started :class:`~convergent.world.etcd.EtcdWorld` whose certificate is the
admin's (before auth is on, any client may set it up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergent.world import keys
from convergent.world.base import WorldError
from convergent.world.etcdwire import prefix_end

if TYPE_CHECKING:
    from convergent.world.etcd import EtcdWorld

__all__ = ["enable_auth", "grant_host", "host_role"]

_READ, _READWRITE = 0, 2  # authpb.Permission.Type


def host_role(host: str) -> str:
    """The name of ``host``'s role."""
    return f"convergent-host-{keys.check_hostname(host)}"


async def _quietly(world: EtcdWorld, method: str, **fields: object) -> None:
    """``method``, where "already exists" / "already granted" is success."""
    try:
        await world.auth_call(method, **fields)
    except WorldError as exc:
        if "already" not in str(exc):
            raise


async def _user(world: EtcdWorld, name: str) -> None:
    await _quietly(world, "UserAdd", name=name, options={"no_password": True})


async def grant_host(world: EtcdWorld, host: str) -> None:
    """Let ``host`` (the CN of its certificate) write its own prefix and read the rest."""
    role = host_role(host)
    await _quietly(world, "RoleAdd", name=role)
    grants = [
        (_READWRITE, *prefix_end(keys.host_prefix(host))),
        (_READWRITE, keys.converged_key(host).encode(), b""),  # one key: no range end
        (_READWRITE, *prefix_end(keys.LOCKS)),
        (_READ, *prefix_end(keys.ROOT)),
    ]
    for perm_type, start, end in grants:
        perm = {"permType": perm_type, "key": start, "range_end": end}
        await world.auth_call("RoleGrantPermission", name=role, perm=perm)
    await _user(world, host)
    await _quietly(world, "UserGrantRole", user=host, role=role)


async def enable_auth(world: EtcdWorld, admin: str) -> None:
    """Turn etcd's authentication on, with ``admin`` (a CN) allowed to manage it."""
    await _quietly(world, "RoleAdd", name="root")
    for user in ("root", keys.check_hostname(admin)):
        await _user(world, user)
        await _quietly(world, "UserGrantRole", user=user, role="root")
    await world.auth_call("AuthEnable")
