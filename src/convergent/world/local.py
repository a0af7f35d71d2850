"""The local world: this host's key/values, kept in its state database.

Every durable write goes to the ``kv`` table of the run's
:class:`~convergent.state.db.StateDB` (committed before the call returns); without a
state database (the Python API's ``run`` without ``state_dir``, noop on a host that has
none yet) the values live in memory for the run. Watches are in-process: the only
writers are the resources of this run, and a watcher is called for each write of its
key before ``set``/``delete`` return, so no event can be lost between a write and the
end of the writer's apply.

One host, one session: the session is the run. Leased keys (``set(..., lease=True)``)
live in memory only and are deleted (watchers told) by ``aclose()``, so none outlives
the run, not even one killed with -9. ``lock(name)`` is an asyncio lock (first come,
first served); ``members()`` is this host, whose leased ``alive`` key is there from the
start.

Resources get it as ``ctx.world``, one per run (:class:`LocalWorldFactory` is the
shared-service key: equal factories for the same state database and host name).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING

from convergent.world import keys
from convergent.world.base import Unsubscribe, WatchCallback

if TYPE_CHECKING:
    from convergent.state.db import StateDB

__all__ = ["LocalWorld", "LocalWorldFactory"]


class _Watch:
    __slots__ = ("active", "callback", "key", "prefix")

    def __init__(self, key: str, callback: WatchCallback, prefix: bool) -> None:
        self.key = key
        self.callback = callback
        self.prefix = prefix
        self.active = True

    def matches(self, key: str) -> bool:
        return key.startswith(self.key) if self.prefix else key == self.key


class LocalWorld:
    """The :class:`~convergent.world.base.World` of one host, over its state database."""

    __slots__ = ("_leased", "_locks", "_memory", "_state", "_watches", "hostname")

    def __init__(self, state: StateDB | None = None, *, hostname: str | None = None) -> None:
        """``state``: where values are kept; None keeps them in memory. ``hostname``:
        this host's name in the world (default: the machine's host name)."""
        self.hostname = keys.check_hostname(socket.gethostname() if hostname is None else hostname)
        self._state = state
        self._memory: dict[str, str] = {}
        self._leased: dict[str, str] = {keys.alive_key(self.hostname): keys.STATUS_ALIVE}
        self._watches: list[_Watch] = []
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def durable(self) -> bool:
        """Whether values outlive the run (there is a state database)."""
        return self._state is not None

    def __repr__(self) -> str:
        where = repr(self._state) if self._state is not None else "memory"
        return f"<LocalWorld {self.hostname} {where}>"

    async def get(self, key: str) -> str | None:
        leased = self._leased.get(key)
        if leased is not None:
            return leased
        if self._state is None:
            return self._memory.get(key)
        return self._state.get_kv(key)

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        if self._state is None:
            found = {k: v for k, v in self._memory.items() if k.startswith(prefix)}
        else:
            found = self._state.kv_prefix(prefix)
        found.update((k, v) for k, v in self._leased.items() if k.startswith(prefix))
        return found

    async def set(self, key: str, value: str, *, lease: bool = False) -> None:
        if lease:
            self._store(key, None)
            self._leased[key] = value
            self._tell(key, value)
        else:
            self._leased.pop(key, None)
            self._write(key, value)

    async def set_many(self, items: Mapping[str, str], *, lease: bool = False) -> None:
        for key, value in items.items():
            await self.set(key, value, lease=lease)

    async def delete(self, key: str) -> None:
        self._leased.pop(key, None)
        self._write(key, None)

    async def delete_many(self, names: Iterable[str]) -> None:
        for key in names:
            await self.delete(key)

    async def watch(
        self, key: str, callback: WatchCallback, *, prefix: bool = False
    ) -> Unsubscribe:
        watch = _Watch(key, callback, prefix)
        self._watches.append(watch)

        def unsubscribe() -> None:
            if watch.active:
                watch.active = False
                self._watches.remove(watch)

        return unsubscribe

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        keys.lock_prefix(name)  # the same names as every backend
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    async def members(self) -> dict[str, str]:
        return {self.hostname: keys.STATUS_ALIVE}

    async def aclose(self) -> None:
        """End the session: every leased key is deleted (and its watchers told)."""
        while self._leased:
            key = next(iter(self._leased))
            del self._leased[key]
            self._tell(key, None)

    def _store(self, key: str, value: str | None) -> None:
        if self._state is not None:
            self._state.set_kv(key, value)
        elif value is None:
            self._memory.pop(key, None)
        else:
            self._memory[key] = value

    def _write(self, key: str, value: str | None) -> None:
        self._store(key, value)
        self._tell(key, value)

    def _tell(self, key: str, value: str | None) -> None:
        for watch in tuple(self._watches):
            if watch.active and watch.matches(key):
                try:
                    watch.callback(key, value)
                except Exception as exc:
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": f"a world watch of {watch.key!r} raised", "exception": exc}
                    )


class LocalWorldFactory:
    """Makes the local world of a run: the key of ``ctx.shared``, equal for one state
    database and host name, so every resource of a run gets the same world."""

    __slots__ = ("hostname", "state")

    def __init__(self, state: StateDB | None, hostname: str | None = None) -> None:
        self.state = state
        self.hostname = hostname

    def __call__(self) -> LocalWorld:
        return LocalWorld(self.state, hostname=self.hostname)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LocalWorldFactory)
            and other.state is self.state
            and other.hostname == self.hostname
        )

    def __hash__(self) -> int:
        return hash((LocalWorldFactory, id(self.state), self.hostname))
