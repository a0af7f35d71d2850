"""How a worker watches its resource, and ``meta.poll`` in place of a watch.

A kind watches in one of three ways, found once per class (:func:`watch_kind`): a
``watch`` coroutine run in a task (``TASK``), the ``Subscribes`` ability (``SUBSCRIBE``:
callbacks, no task), or nothing to watch (``NOTHING``: the default watch, ready at
once). :func:`watch` runs a watch (or a subscribe that failed) and restarts it after
the retry delay of ``meta.retry``/``meta.delay`` when it fails; :func:`poll` owes a check
every ``meta.poll`` seconds instead.

The worker is seen through :class:`Watched` (``engine/worker.py``'s ``Worker`` is one),
so this module imports nothing of the worker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from convergent.engine.events import TIMER
from convergent.engine.meta import WATCH_FAILED, retry_delay, retry_text
from convergent.engine.report import Failed, Log, Report
from convergent.errors import ResourceError, as_resource_error
from convergent.resources.base import Context, Meta, Resource

__all__ = ["NOTHING", "SUBSCRIBE", "TASK", "Watched", "poll", "subscribe", "watch", "watch_kind"]

TASK, SUBSCRIBE, NOTHING = "task", "subscribe", "nothing"
_WATCH_KINDS: dict[type, str] = {}


class _Reports(Protocol):
    def report(self, report: Report) -> None: ...


class Watched(Protocol):
    """What watching needs of a worker: its resource, context, meta, runtime (to report),
    the flags it keeps about its watch, and four of its methods (``wake``: set its wake
    flag)."""

    ready: bool
    dirty: bool
    watch_tries: int
    watch_failed: bool
    unsubscribe: Callable[[], None] | None

    @property
    def resource(self) -> Resource[Any]: ...
    @property
    def ctx(self) -> Context: ...
    @property
    def meta(self) -> Meta: ...
    @property
    def runtime(self) -> _Reports: ...
    def wake(self) -> None: ...
    def release(self) -> None: ...
    def _on_ready(self) -> None: ...
    def poke(self, cause: str = ...) -> None: ...


def watch_kind(kind: type[Resource[Any]]) -> str:
    """How resources of ``kind`` watch: ``TASK``, ``SUBSCRIBE`` or ``NOTHING``."""
    how = _WATCH_KINDS.get(kind)
    if how is None:
        if callable(getattr(kind, "subscribe", None)):
            how = SUBSCRIBE
        elif kind.watch is Resource.watch:
            how = NOTHING
        else:
            how = TASK
        _WATCH_KINDS[kind] = how
    return how


def subscribe(w: Watched) -> ResourceError | None:
    """The ``Subscribes`` ability: subscribe now; the failure if it failed."""
    try:
        unsubscribe: Callable[[], None] = w.resource.subscribe(w.ctx)  # type: ignore[attr-defined]
    except Exception as exc:
        w.ready = False  # it may have called ready() before it failed
        return as_resource_error(w.resource.id, exc, WATCH_FAILED)
    w.unsubscribe = unsubscribe
    if not w.ready:
        w.release()
        return ResourceError(w.resource.id, "subscribe returned without calling ctx.ready()")
    return None


async def watch(w: Watched, error: ResourceError | None = None) -> None:
    """Run the resource's watch (or subscribe); restart it after the retry delay when it
    fails. ``error``: it has just failed (a subscribe), start with the retry."""
    rid = w.resource.id
    subscribes = watch_kind(type(w.resource)) is SUBSCRIBE
    while True:
        if error is None and subscribes:
            error = subscribe(w)
            if error is None:
                return
        elif error is None:
            try:
                await w.resource.watch(w.ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = as_resource_error(rid, exc, WATCH_FAILED)
            else:
                if w.ready:
                    return
                error = ResourceError(rid, "watch returned without calling ctx.ready()")
        w.ready = False
        w.dirty = True  # what happened while nobody watched is unknown: check again
        w.watch_tries += 1
        retry = w.meta.retry
        if retry != -1 and w.watch_tries > retry:
            w.watch_failed = True
            w.runtime.report(Failed.of(rid, error))
            w.wake()
            return
        delay = retry_delay(w.meta, w.watch_tries)
        w.runtime.report(
            Log(rid, retry_text("watch retry", w.watch_tries, retry, delay, error.message))
        )
        w.wake()
        await asyncio.sleep(delay)
        error = None


async def poll(w: Watched) -> None:
    """``meta.poll``: no watch; owe a check every ``poll`` seconds."""
    w._on_ready()
    while True:
        await asyncio.sleep(w.meta.poll)
        w.poke(TIMER)
