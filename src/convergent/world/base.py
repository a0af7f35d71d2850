"""The ``World`` protocol: the key/value store a resource sees as ``ctx.world``.

A backend keeps these guarantees (``tests/world/test_conformance.py`` checks them for
each backend):

- ``get(key)`` returns the value last written (by anyone), or None when there is none.
- ``set(key, value)`` and ``delete(key)`` are durable once they return (as durable as
  the backend is: the local world without a state database is memory only). Deleting a
  key that does not exist is not an error.
- ``watch(key, callback, prefix=False)`` returns once the watch is in place: from then on
  every write of the key (with ``prefix=True``: of every key that starts with it) made
  by anyone, this process included, leads to ``callback(key, value)`` (value None for a
  deletion), in the order of the writes, on the event loop's thread. A write that does
  not change the value may or may not be reported: like ``ctx.event()``, a spurious call
  is fine, a missed one is a bug. A callback must not block and should not raise (what
  it raises goes to the event loop's exception handler, never to the writer). The
  backend may call it before the write returns (the local world does) or later (etcd
  does): callers rely on neither.
- The function ``watch`` returns unsubscribes: no callback after it returns; calling it
  again does nothing. It never blocks (a backend that needs to talk to a server to stop
  the watch does that in the background).

Keys and values are text. Everything that may wait on a network is a coroutine; the
local world answers at once. A world that needs teardown has ``aclose()`` (awaited at
the end of the run) or ``close()``, as every shared service (see
:meth:`~convergent.resources.base.Context.shared`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Unsubscribe", "WatchCallback", "World"]

WatchCallback = Callable[[str, str | None], None]
"""``callback(key, value)``: ``key`` was written; ``value`` is None when it was deleted."""

Unsubscribe = Callable[[], None]


class World(Protocol):
    """Key/values shared by the resources of a run (and later of every host)."""

    async def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it has none."""
        ...

    async def set(self, key: str, value: str) -> None:
        """Write ``value`` under ``key``."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it does not exist)."""
        ...

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe:
        """Call ``callback(key, value)`` for every write of ``key`` (or of every key that
        starts with it, with ``prefix``) from now on; return the function that stops it."""
        ...
