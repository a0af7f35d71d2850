"""Optional abilities of a kind: small protocols the engine looks for.

A kind opts in by defining the methods; nothing needs registering.

- :class:`~convergent.resources.base.Refreshable` (in ``base``): acts on a refresh.
- :class:`Sends`: typed outputs after check/apply, received downstream along edges.
- :class:`AutoEdges`: identifiers it provides and needs, so the engine adds edges.
- :class:`Groupable`: may merge with compatible resources into one vertex.
- :class:`Reversible`: can undo itself when it leaves the graph (``meta: {reverse: true}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from convergent.resources.base import Context, Resource

__all__ = ["AutoEdges", "Groupable", "Output", "Reversible", "Sends"]


class Output(msgspec.Struct, frozen=True):
    """One output a kind sends: its type, and whether it is a secret (never shown)."""

    type: type
    secret: bool = False


@runtime_checkable
class Sends(Protocol):
    """A kind with outputs. ``sends`` declares them (checked against receivers at load
    time); ``outputs()`` returns their current values after a check or apply (a name
    missing from the mapping has no value yet)."""

    sends: ClassVar[Mapping[str, Output]]

    def outputs(self) -> Mapping[str, Any]: ...


@runtime_checkable
class AutoEdges(Protocol):
    """Identifiers (uids) a resource provides and needs, e.g. ``file:/etc/app``.

    ``needs()`` lists groups of candidates, nearest first: for each group, the engine
    adds one edge from the first candidate some resource provides (a file needs its
    nearest managed ancestor directory, not all of them).
    """

    def provides(self) -> Sequence[str]: ...

    def needs(self) -> Sequence[Sequence[str]]: ...


@runtime_checkable
class Groupable(Protocol):
    """A kind whose resources can be merged into one vertex (one package transaction)."""

    def can_group(self, other: Resource[Any]) -> bool: ...


@runtime_checkable
class Reversible(Protocol):
    """A kind that can undo what it did when it leaves the graph (``meta: {reverse: true}``).

    ``reverse`` returns a summary of what it undid, or None when there was nothing to undo.
    """

    async def reverse(self, ctx: Context) -> str | None: ...
