"""The Context a worker gives its own resource, without a bound method per resource.

A plain :class:`~convergent.resources.base.Context` holds four callables; made for a
worker they were four bound methods (``ready``, ``event``, ``log`` of the worker and
``shared`` of the engine), 64 bytes each, ~25 MiB at 100,000 resources. This one holds
the worker (in the slot of the callables) and calls its methods when asked: the same
behaviour, one pointer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from convergent.resources.base import Context

if TYPE_CHECKING:
    from convergent.state.db import StateDB
    from convergent.world.base import World

__all__ = ["WorkerContext"]

S = TypeVar("S")


class _Runtime(Protocol):
    state: StateDB | None
    world: World | None

    def shared(self, factory: Callable[[], Any]) -> Any: ...


class _Owner(Protocol):
    @property
    def runtime(self) -> _Runtime: ...
    def _on_ready(self) -> None: ...
    def _drifted(self) -> None: ...
    def _log(self, message: str) -> None: ...


class WorkerContext(Context):
    """``ctx`` of ``worker``'s resource: ``ready``, ``event`` and ``log`` are the worker's
    ``_on_ready``, ``_drifted`` and ``_log``; ``shared`` is the engine's. The worker is
    kept in the slot where a plain Context keeps its callables (80 bytes in all)."""

    __slots__ = ()

    def __init__(self, worker: _Owner, resource_id: str) -> None:
        runtime = worker.runtime
        self.id = resource_id
        self.refresh = _NONE
        self.received_changed = _NONE
        self.state = runtime.state
        self._world = runtime.world
        self._calls = worker

    def ready(self) -> None:
        self._calls._on_ready()

    @property
    def event(self) -> Callable[[], None]:
        """``ctx.event()`` as on any Context; ``ctx.event`` is the context itself, one
        callable for every watch (a file's inotify callback, its expected rename) instead
        of a bound method of 64 bytes each."""
        return self

    def __call__(self) -> None:
        """``ctx.event()``: tell the worker its resource may have changed."""
        self._calls._drifted()

    def log(self, message: str) -> None:
        self._calls._log(message)

    def shared(self, factory: Callable[[], S]) -> S:
        result: S = self._calls.runtime.shared(factory)
        return result

    def for_member(
        self, member_id: str, *, ready: Callable[[], None], log: Callable[[str], None]
    ) -> Context:
        return Context(
            member_id,
            ready=ready,
            event=self.event,
            log=log,
            shared=self._calls.runtime.shared,
            state=self.state,
            world=self._world,
        )


_NONE: frozenset[str] = frozenset()
