"""The Context a worker gives its own resource, without a bound method per resource.

A plain :class:`~convergent.resources.base.Context` holds four callables; made for a
worker they were four bound methods (``ready``, ``event``, ``log`` of the worker and
``shared`` of the engine), 64 bytes each, ~25 MiB at 100,000 resources. This one holds
the worker and calls its methods when asked: the same behaviour, one pointer.
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


def _unused(*args: Any) -> Any:
    raise AssertionError("a WorkerContext calls its worker, never these")


class WorkerContext(Context):
    """``ctx`` of ``worker``'s resource: ``ready``, ``event`` and ``log`` are the worker's
    ``_on_ready``, ``_drifted`` and ``_log``; ``shared`` is the engine's."""

    __slots__ = ("_worker",)

    def __init__(self, worker: _Owner, resource_id: str) -> None:
        runtime = worker.runtime
        super().__init__(
            resource_id,
            ready=_unused,
            event=_unused,
            log=_unused,
            shared=_unused,
            state=runtime.state,
            world=runtime.world,
        )
        self._worker = worker

    def ready(self) -> None:
        self._worker._on_ready()

    def event(self) -> None:
        self._worker._drifted()

    def log(self, message: str) -> None:
        self._worker._log(message)

    def shared(self, factory: Callable[[], S]) -> S:
        result: S = self._worker.runtime.shared(factory)
        return result

    def for_member(
        self, member_id: str, *, ready: Callable[[], None], log: Callable[[str], None]
    ) -> Context:
        return Context(
            member_id,
            ready=ready,
            event=self.event,
            log=log,
            shared=self._worker.runtime.shared,
            state=self.state,
            world=self._world,
        )
