"""The ``World`` protocol: the key/value store a resource sees as ``ctx.world``.

A backend keeps these guarantees (``tests/world/test_conformance.py`` checks them for
each backend):

- ``hostname`` is this agent's host name (``--hostname``); it never changes during a run.
- ``get(key)`` returns the value last written (by anyone), or None when there is none.
  ``get_prefix(prefix)`` returns every key that starts with ``prefix`` and its value.
- ``set(key, value)`` and ``delete(key)`` are durable once they return (as durable as
  the backend is: the local world without a state database is memory only). Deleting a
  key that does not exist is not an error.
- ``set(key, value, lease=True)``: the key lives as long as this agent's session. The
  session is a lease the world keeps alive while the agent runs; when the agent stops
  (``aclose``) its leased keys are deleted, and when it dies they are gone within the
  world's TTL (the local world's session is the run: nothing leased outlives it). A
  later ``set`` of the key without ``lease`` makes it durable again.
- ``set_many(items, lease=...)`` is ``set`` of each item; a backend may write them at
  one revision (etcd: one transaction per 64 keys), so a watcher may get them together.
  ``delete_many(names)`` is ``delete`` of each key, the same way.
- ``watch(key, callback, prefix=False)`` returns once the watch is in place: from then on
  every write of the key (with ``prefix=True``: of every key that starts with it) made
  by anyone, this process included, leads to ``callback(key, value)`` (value None for a
  deletion, an expired lease's included), in the order of the writes, on the event
  loop's thread. A write that does not change the value may or may not be reported:
  like ``ctx.event()``, a spurious call is fine, a missed one is a bug. A callback must
  not block and should not raise (what it raises goes to the event loop's exception
  handler, never to the writer). The backend may call it before the write returns (the
  local world does) or later (etcd does): callers rely on neither.
- The function ``watch`` returns unsubscribes: no callback after it returns; calling it
  again does nothing. It never blocks (a backend that needs to talk to a server to stop
  the watch does that in the background).
- ``lock(name)`` is an async context manager: one holder at a time across the cluster
  (every agent of the world, and every task of this one), in the order they asked;
  released on exit, or when the holder's session ends (an agent that dies holding it
  releases it within the TTL).
- ``members()``: the hosts with a live session, each with its status (the value of its
  leased ``/convergent/hosts/HOST/alive`` key, see :mod:`convergent.world.keys`).

Keys and values are text. Everything that may wait on a network is a coroutine; the
local world answers at once. A world that needs teardown has ``aclose()`` (awaited at
the end of the run) or ``close()``, as every shared service (see
:meth:`~convergent.resources.base.Context.shared`). What a backend cannot do (its
servers are unreachable past its retries) raises :class:`WorldError`, which names the
endpoints and says how to fix it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from convergent.errors import ConvergentError

__all__ = ["Unsubscribe", "WatchCallback", "World", "WorldError"]

WatchCallback = Callable[[str, str | None], None]
"""``callback(key, value)``: ``key`` was written; ``value`` is None when it was deleted."""

Unsubscribe = Callable[[], None]


class WorldError(ConvergentError):
    """The world could not do what was asked (a server unreachable, a lock lost...)."""


class World(Protocol):
    """Key/values shared by the resources of a run and, with etcd, by every host."""

    hostname: str
    """This agent's host name: it writes only under ``/convergent/hosts/HOSTNAME/``."""

    async def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it has none."""
        ...

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        """Every key that starts with ``prefix``, with its value."""
        ...

    async def set(self, key: str, value: str, *, lease: bool = False) -> None:
        """Write ``value`` under ``key``; with ``lease``, only for this agent's session."""
        ...

    async def set_many(self, items: Mapping[str, str], *, lease: bool = False) -> None:
        """``set`` of every key and value of ``items``, at once where the backend can."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it does not exist)."""
        ...

    async def delete_many(self, names: Iterable[str]) -> None:
        """``delete`` of every key in ``names``, at once where the backend can."""
        ...

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe:
        """Call ``callback(key, value)`` for every write of ``key`` (or of every key that
        starts with it, with ``prefix``) from now on; return the function that stops it."""
        ...

    def lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the lock ``name`` (one holder at a time across the cluster) inside the
        ``async with``."""
        ...

    async def members(self) -> dict[str, str]:
        """Host name -> status, for every host with a live session."""
        ...
