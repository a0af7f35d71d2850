"""``kv``: a key/value in the world, kept in this host's state database.

``value`` is stored under ``key`` (default: the resource's name) in the run's world
(``ctx.world``: the local world keeps it in the state database; a run without one keeps
it in memory for the run); leaving ``value`` out deletes the key. The value is sent
downstream as ``value``.

``watch`` watches the key: a write by another writer (another resource of the run, and
with the etcd world another host) that leaves it at something else is an event, and
the value is put back.

Summaries say what happened to the key, never its value: a value may have been received
from a secret output (``recv: {value: password[db].password}``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

from convergent.errors import ParamError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["Kv", "KvParams"]


class KvParams(Params, frozen=True):
    """Parameters of ``kv``: a key/value in the world (this host's state database).

    key: the key (default: the resource's name)
    value: the value to store; leave it out to delete the key
    """

    key: str | None = None
    value: str | None = None


class Kv(Resource[KvParams], kind="kv"):
    """Keeps one key of the world at a value (or absent)."""

    sends: ClassVar[Mapping[str, Output]] = {"value": Output(str)}

    _current: str | None = None  # the stored value as last read or written

    def validate(self) -> None:
        if self.params.key is not None and not self.params.key:
            raise ParamError("key", "the key is empty; leave it out to use the resource's name")

    @property
    def key(self) -> str:
        return self.params.key if self.params.key is not None else self.name

    async def watch(self, ctx: Context) -> None:
        want = self.params.value

        def written(key: str, value: str | None) -> None:
            if value != want:
                ctx.event()

        unsubscribe = await ctx.world.watch(self.key, written)
        try:
            ctx.ready()
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    async def check(self, ctx: Context) -> Change | None:
        current = await ctx.world.get(self.key)
        self._current = current
        want = self.params.value
        if current == want:
            return None
        if want is None:
            return Change("deleted")
        return Change("set" if current is None else "changed")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        value = self.params.value
        if value is None:
            await ctx.world.delete(self.key)
        else:
            await ctx.world.set(self.key, value)
        self._current = value
        return None

    def outputs(self) -> Mapping[str, Any]:
        return {} if self._current is None else {"value": self._current}
