"""Every optional ability of a kind: the small protocols the engine looks for.

A kind opts in by defining the methods; nothing needs registering. The contract core
(``watch``/``check``/``apply``, :class:`~convergent.resources.base.Context`) is in
``base``; everything a kind *may* add is here:

- :class:`Subscribes`: watching that is only callbacks (a synchronous ``subscribe``).
- :class:`ChecksNow`: tells at once, without waiting, that its state is right.
- :class:`Refreshable`: acts on a refresh notification.
- :class:`Sends`: typed outputs after check/apply, received downstream along edges.
- :class:`AutoEdges`: identifiers it provides and needs, so the engine adds edges.
- :class:`Groupable`: may merge with compatible resources into one vertex.
- :class:`ChecksGroup`: checks all its members of a group in one call.
- :class:`AppliesGroup`: applies all its members of a group in one call.
- :class:`Reversible`: can undo itself when it leaves the graph (``meta: {reverse: true}``).
- :class:`RecordsReverse`, :class:`PlansReverse`: help a reversible kind do that.
- :class:`Predicts`: under noop, says what it would leave behind and reads the predicted
  state (:mod:`convergent.resources.predicted`).
- :class:`Destroyable`: has an absent state, which ``convergent destroy`` drives it to.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from convergent.resources.base import Change, Context, Resource
    from convergent.resources.predicted import Effects, View

__all__ = [
    "AppliesGroup",
    "AutoEdges",
    "ChecksGroup",
    "ChecksNow",
    "Destroyable",
    "Groupable",
    "Member",
    "Output",
    "PlansReverse",
    "Predicts",
    "RecordsReverse",
    "Refreshable",
    "Reversible",
    "Sends",
    "Subscribes",
]


class Subscribes(Protocol):
    """Optional, instead of a ``watch`` coroutine: watching that is only callbacks.

    ``subscribe(ctx)`` subscribes to the events of the real thing (``ctx.event`` as the
    callback), calls ``ctx.ready()`` and returns the function that unsubscribes. The
    engine calls it from the worker instead of running ``watch`` as a task (one task and
    one cancellation less per resource) and calls the unsubscribe exactly once when the
    resource stops (end of run, removal, changeover). It must not block. Raising, or
    returning without calling ``ctx.ready()``, is a watch failure (retried like one). Once
    subscribed it cannot fail: a watch that can fail later is a ``watch`` coroutine. The
    default ``watch`` of such a kind subscribes and waits (what a group runs).
    """

    def subscribe(self, ctx: Context) -> Callable[[], None]: ...


class ChecksNow(Protocol):
    """Optional: a check that usually needs no waiting (a file's: a few system calls).

    ``check_now(ctx)`` is True when ``check(ctx)`` would return None at this moment, told
    synchronously; the change ``check`` would return now when the state is not right (or
    False: the engine calls ``check`` then); False when the check would fail, or when it
    cannot be told without waiting. Read only, like ``check``; it never raises. The
    engine asks it in a resource's first pass (``engine/firstpass.py``): True ends that
    pass at once, without a task of its own; otherwise the pass runs as usual, in its
    task, and applies the change given instead of calling ``check``. It is asked only
    after the watch said ``ready()``.
    """

    def check_now(self, ctx: Context) -> bool | Change: ...


@runtime_checkable
class Refreshable(Protocol):
    """A kind that acts on a refresh notification (``notify`` edge from a changed upstream).

    The engine calls ``refresh`` after check/apply when a refresh is pending and apply
    did not already run in that pass. It returns a summary of what it did, or None
    when it did nothing.
    """

    async def refresh(self, ctx: Context) -> str | None: ...


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


if TYPE_CHECKING:

    class Member(NamedTuple):
        """One member's part of a group apply: the resource, its own Context, its Change."""

        resource: Resource[Any]
        ctx: Context
        change: Change

else:  # the same tuple, made without typing compiling the annotations' strings (~1 ms
    # for the first compile() of a run)
    Member = namedtuple("Member", ("resource", "ctx", "change"))
    Member.__doc__ = (
        "One member's part of a group apply: the resource, its own Context, its Change."
    )


class ChecksGroup(Protocol):
    """Optional hook on a Groupable kind: check several of its resources at once.

    When a group holds members of a kind with this classmethod, they are checked in one
    call (one package query for the whole transaction, not one per member) instead of
    one ``check`` each. ``members`` pairs each resource with its own Context, in member
    order; the result has one entry per member, in the same order: None when it is
    right, else its Change. Read only, like ``check``; raising fails them all.
    """

    @classmethod
    async def check_group(
        cls, members: Sequence[tuple[Resource[Any], Context]]
    ) -> Sequence[Change | None]: ...


class AppliesGroup(Protocol):
    """Optional hook on a Groupable kind: apply several of its resources at once.

    When a group holds members of a kind with this classmethod, their changes are applied
    in one call (in member order) instead of one ``apply`` each. It returns one summary
    (or None for the change's own) per member, in the same order; an exception in place
    of a summary fails that member alone (a package left out of the transaction), and
    raising fails them all.
    """

    @classmethod
    async def apply_group(cls, members: Sequence[Member]) -> Sequence[str | Exception | None]: ...


@runtime_checkable
class Reversible(Protocol):
    """A kind that can undo what it did when it leaves the graph (``meta: {reverse: true}``).

    ``reverse`` returns a summary of what it undid, or None when there was nothing to undo.
    """

    async def reverse(self, ctx: Context) -> str | None: ...


@runtime_checkable
class RecordsReverse(Protocol):
    """A reversible kind that keeps, before an apply, what it needs to undo it.

    ``record_reverse(ctx, change)`` is called before each ``apply`` of a resource with
    ``meta: {reverse: true}`` (never under noop).
    """

    def record_reverse(self, ctx: Context, change: Change) -> None: ...


@runtime_checkable
class PlansReverse(Protocol):
    """A reversible kind that can say, read only, what ``reverse`` would do (for noop)."""

    def plan_reverse(self, ctx: Context) -> str | None: ...


class Predicts(Protocol):
    """A kind that manages something other kinds read: under noop it describes what it
    would leave behind, and reads what resources upstream would leave behind.

    ``predict(ctx, change, view)``: the post-state of what it manages once ``change``
    (from its check) is applied, or once its refresh ran (``change`` is None), as
    :class:`~convergent.resources.predicted.Effects`. ``check_predicted(ctx, view)``:
    its ``check`` reading through ``view`` (called instead of ``check`` under noop when
    something upstream would change); it raises
    :class:`~convergent.resources.predicted.Uncertain` where it cannot be exact. Both are
    read only. A kind may also define ``predict_refresh(ctx, view) -> str | None``: what a
    refresh would do (None: nothing, e.g. a guard says skip); without it a notified
    ``Refreshable`` would refresh. The contract: its tests check the prediction against
    the real apply (``tests/noop/``).
    """

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects: ...

    async def check_predicted(self, ctx: Context, view: View) -> Change | None: ...


@runtime_checkable
class Destroyable(Protocol):
    """A kind with an absent state, which ``convergent destroy`` drives it to.

    ``absent_state`` says what that state is, in one line (the reference prints it).
    ``destroy_default`` is what destroy does without ``destroy:`` on the entry: "remove"
    (files, lines, processes...) or "keep" (packages and accounts: removed only when the
    policy says ``destroy: remove``). ``absent(explicit)`` returns this resource in its
    absent form: a resource of the same kind and name, with ``meta`` kept as it is,
    which the engine checks and applies like any other (so noop, reports, retries and
    timeouts hold for it too); or None when there is nothing to remove (its declared
    state is already absent, or it only reads). ``explicit``: the policy said
    ``destroy: remove`` on this entry (a directory then goes with what is in it).
    Building the form does no I/O.
    """

    absent_state: ClassVar[str]
    destroy_default: ClassVar[str]

    def absent(self, explicit: bool) -> Resource[Any] | None: ...
