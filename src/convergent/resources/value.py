"""``value``: a named value this host publishes; any host receives it as ``world[HOST].NAME``.

This module also holds ``world[HOST]``, the vertex through which a resource receives one.

A ``value`` resource keeps ``/convergent/hosts/HOST/values/NAME`` at its ``content``
(written by hand, or received along an edge: ``recv: {content: exec[id].stdout}``),
with the agent's lease: the value disappears when the agent stops or dies. Leaving
``content`` out withdraws it. It sends ``value``. A secret output can never be received
into a value (the policy loader and the engine refuse it): the world is shared by every
host and holds no secret in clear.

Any host's resource receives it with ``recv: {param: world[HOST].NAME}``, or
``world[*].NAME`` for the list of the values every host publishes under NAME (sorted by
host). The policy loader adds the vertex ``world[HOST]`` (:func:`world_source`) as the
sender: it watches that host's values and sends each as an output of its name, so a
changed value checks its receivers again; while a value is missing its receivers wait
(``engine/receive.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from convergent.errors import ParamError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource
from convergent.world.keys import HOSTS, VALUES, host_key, split_host_key, value_key

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["Value", "ValueParams", "WorldAll", "WorldValues", "world_source"]


class ValueParams(Params, frozen=True):
    """Parameters of ``value``: a named value published for every host.

    content: the value (any host receives it as world[HOST].NAME); leave it out to withdraw it
    """

    content: str | None = None


class Value(Resource[ValueParams], kind="value"):
    """Keeps this host's value NAME in the world at ``content`` (or absent)."""

    sends: ClassVar[Mapping[str, Output]] = {"value": Output(str)}

    def validate(self) -> None:
        if not self.name.isidentifier():
            raise ParamError(
                None,
                f"value name {self.name!r}: a value's name is made of letters, digits and '_' "
                "(not starting with a digit), so other hosts can receive it as world[HOST].NAME",
            )

    def key(self, ctx: Context) -> str:
        return value_key(ctx.world.hostname, self.name)

    async def watch(self, ctx: Context) -> None:
        want = self.params.content

        def written(key: str, value: str | None) -> None:
            if value != want:
                ctx.event()

        unsubscribe = await ctx.world.watch(self.key(ctx), written)
        try:
            ctx.ready()
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    async def check(self, ctx: Context) -> Change | None:
        current = await ctx.world.get(self.key(ctx))
        want = self.params.content
        if current == want:
            return None
        if want is None:
            return Change("withdrawn")
        return Change("published" if current is None else "changed")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        content = self.params.content
        if content is None:
            await ctx.world.delete(self.key(ctx))
        else:
            await ctx.world.set(self.key(ctx), content, lease=True)
        return None

    def outputs(self) -> Mapping[str, Any]:
        content = self.params.content
        return {} if content is None else {"value": content}

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: once published it sends its content (None ``change``: it may)."""
        from convergent.resources.predicted import UNKNOWN, Effects

        if change is None:
            return Effects(outputs={"value": UNKNOWN})
        return Effects(outputs=dict(self.outputs()))


class _AnyName(Mapping[str, Output]):
    """Outputs named by any identifier, all of one type (the values of a host)."""

    def __init__(self, output: Output) -> None:
        self._output = output

    def __getitem__(self, name: str) -> Output:
        if not isinstance(name, str) or not name.isidentifier():
            raise KeyError(name)
        return self._output

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.isidentifier()

    def __iter__(self) -> Iterator[str]:
        return iter(())  # no fixed names: nothing secret to remember either

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True  # it does send (the engine tells its receivers of new values)


class WorldParams(Params, frozen=True):
    """The ``world[HOST]`` vertex takes no parameters: its name is the host."""


class WorldValues(Resource[WorldParams]):
    """``world[HOST]``: the values HOST publishes, each sent as the output of its name.

    Not a kind a policy writes: the loader adds it for ``recv: {p: world[HOST].NAME}``.
    """

    kind: ClassVar[str] = "world"
    sends: ClassVar[Mapping[str, Output]] = _AnyName(Output(str))

    _seen: dict[str, str | None]  # world key -> value, kept by the watch
    _values: dict[str, Any]  # output name -> value, as of the last check

    def prefix(self) -> str:
        return host_key(self.name, VALUES) + "/"

    def _keep(self, key: str) -> bool:
        return True

    async def watch(self, ctx: Context) -> None:
        seen: dict[str, str | None] = {}
        self._seen = seen
        keep = self._keep

        def written(key: str, value: str | None) -> None:
            if keep(key):
                seen[key] = value
                ctx.event()

        unsubscribe = await ctx.world.watch(self.prefix(), written, prefix=True)
        try:
            found = await ctx.world.get_prefix(self.prefix())
            for key, value in found.items():
                if keep(key):
                    seen.setdefault(key, value)
            ctx.ready()
            await asyncio.Event().wait()
        finally:
            unsubscribe()

    async def check(self, ctx: Context) -> Change | None:
        seen = getattr(self, "_seen", {})
        self._values = {
            key.rpartition("/")[2]: value for key, value in seen.items() if value is not None
        }
        return None

    def outputs(self) -> Mapping[str, Any]:
        return getattr(self, "_values", {})


class WorldAll(WorldValues):
    """``world[*]``: for each name, the list of the values every host publishes under it
    (sorted by host)."""

    sends: ClassVar[Mapping[str, Output]] = _AnyName(Output(list))

    def prefix(self) -> str:
        return HOSTS

    def _keep(self, key: str) -> bool:
        split = split_host_key(key)
        return split is not None and split[1].startswith(VALUES + "/")

    async def check(self, ctx: Context) -> Change | None:
        seen = getattr(self, "_seen", {})
        values: dict[str, list[str]] = {}
        for key in sorted(seen):
            value = seen[key]
            if value is not None:
                values.setdefault(key.rpartition("/")[2], []).append(value)
        self._values = values
        return None


def world_source(host: str) -> WorldValues:
    """The ``world[HOST]`` vertex (``world[*]`` for every host)."""
    return WorldAll("*") if host == "*" else WorldValues(host)
