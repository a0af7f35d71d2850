"""The local world: this host's key/values, kept in its state database.

Every write goes to the ``kv`` table of the run's :class:`~convergent.state.db.StateDB`
(committed before the call returns); without a state database (the Python API's ``run``
without ``state_dir``, noop on a host that has none yet) the values live in memory for
the run. Watches are in-process: the only writers are the resources of this run, and a
watcher is called for each write of its key before ``set``/``delete`` return, so no
event can be lost between a write and the end of the writer's apply.

Resources get it as ``ctx.world``, one per run (:class:`LocalWorldFactory` is the
shared-service key: equal factories for the same state database).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

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

    __slots__ = ("_memory", "_state", "_watches")

    def __init__(self, state: StateDB | None = None) -> None:
        """``state``: where values are kept; None keeps them in memory."""
        self._state = state
        self._memory: dict[str, str] = {}
        self._watches: list[_Watch] = []

    @property
    def durable(self) -> bool:
        """Whether values outlive the run (there is a state database)."""
        return self._state is not None

    def __repr__(self) -> str:
        where = repr(self._state) if self._state is not None else "memory"
        return f"<LocalWorld {where}>"

    async def get(self, key: str) -> str | None:
        if self._state is None:
            return self._memory.get(key)
        return self._state.get_kv(key)

    async def set(self, key: str, value: str) -> None:
        self._write(key, value)

    async def delete(self, key: str) -> None:
        self._write(key, None)

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

    def _write(self, key: str, value: str | None) -> None:
        if self._state is not None:
            self._state.set_kv(key, value)
        elif value is None:
            self._memory.pop(key, None)
        else:
            self._memory[key] = value
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
    database, so every resource of a run gets the same world."""

    __slots__ = ("state",)

    def __init__(self, state: StateDB | None) -> None:
        self.state = state

    def __call__(self) -> LocalWorld:
        return LocalWorld(self.state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalWorldFactory) and other.state is self.state

    def __hash__(self) -> int:
        return hash((LocalWorldFactory, id(self.state)))
