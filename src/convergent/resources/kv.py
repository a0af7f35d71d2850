"""``kv``: a key/value in the world, which every host of a cluster can read.

``value`` is stored under ``key`` (default: the resource's name) in this host's part of
the world, ``/convergent/hosts/HOST/kv/KEY`` (:func:`convergent.world.keys.kv_key`): the
local world keeps it in the state database (a run without one keeps it in memory for
the run); the etcd world in etcd, where every host sees it. Leaving ``value`` out
deletes the key. The value is sent downstream as ``value``.

``host`` reads another host's key instead: a host writes only under its own prefix, so
such a kv never writes (``value`` must be left out); it sends the other host's value as
``value``, and its receivers wait until that host has set it. A change there re-checks
it, and its receivers get the new value::

    # on host a                            # on host b
    kv:                                    kv:
      - name: port                           - name: port-of-a
        value: "8080"                          key: port
                                               host: a
                                           file:
                                             - name: /etc/app/upstream
                                               recv: {content: kv[port-of-a].value}

``watch`` watches the key: a write by another writer (another resource of the run, and
with the etcd world another host) that leaves it at something else is an event, and
the value is put back (for a reader: any write is an event).

A secret never reaches a shared world: on the etcd world, a value that is one of this
host's stored secrets (a ``password`` output received along an edge) is refused, and
nothing is written. Summaries say what happened to the key, never its value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from convergent.errors import ParamError, ResourceError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource
from convergent.world import keys

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["Kv", "KvParams"]


class KvParams(Params, frozen=True):
    """Parameters of ``kv``: a key/value in the world (every host can read it).

    key: the key (default: the resource's name)
    value: the value to store; leave it out to delete the key (or, with host, to read it)
    host: read this host's key instead of keeping this host's (default: this host)
    """

    key: str | None = None
    value: str | None = None
    host: str | None = None


class Kv(Resource[KvParams], kind="kv"):
    """Keeps one key of this host's part of the world at a value (or absent), or reads
    one of another host's."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = "this host's key is deleted (another host's is only read)"
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Kv | None:
        """The key deleted; None when it reads another host's or is deleted already."""
        if self.reads or self.params.value is None:
            return None
        return Kv(self.name, KvParams(key=self.params.key), meta=self.meta)

    sends: ClassVar[Mapping[str, Output]] = {"value": Output(str)}

    _current: str | None = None  # the stored value as last read or written

    def validate(self) -> None:
        if self.params.key is not None and not self.params.key:
            raise ParamError("key", "the key is empty; leave it out to use the resource's name")
        host = self.params.host
        if host is not None:
            try:
                keys.check_hostname(host)
            except ValueError as exc:
                raise ParamError("host", str(exc)) from None
            if self.params.value is not None:
                raise ParamError(
                    "value",
                    f"host {host}'s key is read only here (a host writes only under its own"
                    " prefix): leave value out to read it, or set it in host"
                    f" {host}'s policy",
                )

    @property
    def key(self) -> str:
        return self.params.key if self.params.key is not None else self.name

    @property
    def reads(self) -> bool:
        """Whether this kv reads another host's key (never writes)."""
        return self.params.host is not None

    def world_key(self, ctx: Context) -> str:
        """Where the key lives: under its host's prefix."""
        return keys.kv_key(self.params.host or ctx.world.hostname, self.key)

    async def watch(self, ctx: Context) -> None:
        want = self.params.value
        reads = self.reads

        def written(key: str, value: str | None) -> None:
            if reads or value != want:
                ctx.event()

        unsubscribe = await ctx.world.watch(self.world_key(ctx), written)
        try:
            ctx.ready()
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    async def check(self, ctx: Context) -> Change | None:
        current = await ctx.world.get(self.world_key(ctx))
        self._current = current
        if self.reads:
            return None
        want = self.params.value
        if current == want:
            return None
        if want is None:
            return Change("deleted")
        return Change("set" if current is None else "changed")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        value = self.params.value
        key = self.world_key(ctx)
        if value is None:
            await ctx.world.delete(key)
        else:
            self._refuse_secret(ctx, value)
            await ctx.world.set(key, value)
        self._current = value
        return None

    def _refuse_secret(self, ctx: Context, value: str) -> None:
        from convergent.world.local import LocalWorld

        if isinstance(ctx.world, LocalWorld) or ctx.state is None:
            return
        if value in ctx.state.secret_values():
            raise ResourceError(
                self.id,
                "the value is a secret (a password output) and the world is shared with"
                " other hosts: it is not written there; keep it on this host (a file"
                " with mode 0600) or send something derived from it",
            )

    def outputs(self) -> Mapping[str, Any]:
        return {} if self._current is None else {"value": self._current}

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: once applied, it sends its value (None ``change``: it may)."""
        from convergent.resources.predicted import UNKNOWN, Effects

        if change is None:
            return Effects(outputs={"value": UNKNOWN})
        value = self.params.value
        return Effects(outputs={} if value is None else {"value": value})
