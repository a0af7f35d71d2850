"""``kv``: a key/value on the local world, kept in this host's state database.

``value`` is stored under ``key`` (default: the resource's name); leaving ``value`` out
deletes the key. The value is sent downstream as ``value``.

Nothing but convergent writes the state database, and this resource is the only one
that manages its key, so ``watch`` is the default: ready, then nothing to wait for. (The
cluster issue moves key/values to etcd, where other hosts write and a watch is needed.)

Summaries say what happened to the key, never its value: a value may have been received
from a secret output (``recv: {value: password[db].password}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from convergent.errors import ParamError, ResourceError
from convergent.resources.abilities import Output
from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["Kv", "KvParams"]


class KvParams(Params, frozen=True):
    """Parameters of ``kv``: a key/value in this host's state database.

    key: the key (default: the resource's name)
    value: the value to store; leave it out to delete the key
    """

    key: str | None = None
    value: str | None = None


class Kv(Resource[KvParams], kind="kv"):
    """Keeps one key of the local key/value store at a value (or absent)."""

    sends: ClassVar[Mapping[str, Output]] = {"value": Output(str)}

    _current: str | None = None  # the stored value as last read or written

    def validate(self) -> None:
        if self.params.key is not None and not self.params.key:
            raise ParamError("key", "the key is empty; leave it out to use the resource's name")

    @property
    def key(self) -> str:
        return self.params.key if self.params.key is not None else self.name

    async def check(self, ctx: Context) -> Change | None:
        current = None if ctx.state is None else ctx.state.get_kv(self.key)
        self._current = current
        want = self.params.value
        if current == want:
            return None
        if want is None:
            return Change("deleted")
        return Change("set" if current is None else "changed")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        if ctx.state is None:
            raise ResourceError(
                self.id,
                "kv keeps its value in the state database, and this run has none; "
                "run it with a state directory (convergent run --state-dir DIR)",
            )
        ctx.state.set_kv(self.key, self.params.value)
        self._current = self.params.value
        return None

    def outputs(self) -> Mapping[str, Any]:
        return {} if self._current is None else {"value": self._current}
