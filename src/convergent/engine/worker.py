"""One worker per vertex: runs the resource's watch, then checks and applies on events."""

from __future__ import annotations

import asyncio
import enum
import time
from typing import TYPE_CHECKING, Any

from convergent.engine.report import Blocked, Changed, Failed, Log, WouldChange
from convergent.errors import ResourceError
from convergent.resources.base import Change, Context, Refreshable, Resource

if TYPE_CHECKING:
    from convergent.engine.runner import Engine

__all__ = ["State", "Worker"]


class State(enum.Enum):
    WAITING = "waiting"  # has work (dirty) but an upstream is not clean yet, or not ready
    RUNNING = "running"  # in check/apply/refresh
    CLEAN = "clean"  # checked, nothing left to do
    FAILED = "failed"  # last check/apply/watch raised
    BLOCKED = "blocked"  # has work but an upstream failed

    @property
    def settled(self) -> bool:
        return self in (State.CLEAN, State.FAILED, State.BLOCKED)


class Worker:
    """Drives one resource. All methods run on the engine's event loop."""

    __slots__ = (
        "blocked_by",
        "ctx",
        "dirty",
        "downstream",
        "engine",
        "ready",
        "refresh_from",
        "resource",
        "state",
        "upstream",
        "wake",
        "watch_failed",
    )

    def __init__(self, engine: Engine, resource: Resource[Any]) -> None:
        self.engine = engine
        self.resource = resource
        self.upstream: list[Worker] = []
        self.downstream: list[tuple[Worker, bool]] = []  # (worker, notify)
        self.state = State.WAITING
        self.dirty = True  # a check is owed
        self.ready = False
        self.watch_failed = False
        self.blocked_by: str | None = None
        self.refresh_from: set[str] = set()
        self.wake = asyncio.Event()
        self.ctx = Context(
            resource.id,
            ready=self._on_ready,
            event=self.poke,
            log=self._log,
            shared=engine.shared,
        )

    # -- callbacks from the resource and from other workers ---------------------------

    def _on_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.wake.set()

    def poke(self) -> None:
        """Something may have changed: owe a check. Never lost, even mid-apply."""
        self.dirty = True
        if self.state is State.CLEAN:
            self._set_state(State.WAITING)
        self.wake.set()

    def _log(self, message: str) -> None:
        self.engine.report(Log(self.resource.id, message))

    def _set_state(self, state: State) -> None:
        old = self.state
        if old is state:
            return
        self.state = state
        self.engine.state_changed(old, state)
        for child, _ in self.downstream:
            child.wake.set()

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        rid = self.resource.id
        self.engine.spawn(self._watch(), name=f"watch {rid}")
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.watch_failed or not self.ready or not self.dirty:
                continue
            blocker = self._blocker()
            if blocker is not None:
                if self.state is not State.BLOCKED or self.blocked_by != blocker:
                    self.blocked_by = blocker
                    self._set_state(State.BLOCKED)
                    self.engine.report(Blocked(rid, blocker))
                continue
            if any(up.state is not State.CLEAN for up in self.upstream):
                self.blocked_by = None
                self._set_state(State.WAITING)
                continue
            self.blocked_by = None
            self.dirty = False
            self._set_state(State.RUNNING)
            try:
                await self._process()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.engine.report(Failed(rid, _as_resource_error(rid, exc)))
                self._set_state(State.FAILED)
            else:
                self._set_state(State.CLEAN)
            if self.dirty:
                self.wake.set()

    def _blocker(self) -> str | None:
        """The failed resource upstream that stops this one, if any."""
        for up in self.upstream:
            if up.state is State.FAILED:
                return up.resource.id
            if up.state is State.BLOCKED and up.blocked_by is not None:
                return up.blocked_by
        return None

    async def _process(self) -> None:
        res, ctx, engine = self.resource, self.ctx, self.engine
        refresh = frozenset(self.refresh_from)
        ctx.refresh = refresh
        noop = engine.noop or res.meta.noop
        change = await res.check(ctx)
        if noop:
            self.refresh_from.clear()
            notifies = tuple(w.resource.id for w, notify in self.downstream if notify)
            if change is not None:
                engine.report(WouldChange(res.id, change, notifies))
            if refresh and isinstance(res, Refreshable):
                engine.report(
                    Log(res.id, f"would refresh (notified by {', '.join(sorted(refresh))})")
                )
            return
        changed = False
        if change is not None:
            start = time.perf_counter()
            summary = await res.apply(ctx, change)
            engine.report(
                Changed(res.id, summary or change.summary, change, time.perf_counter() - start)
            )
            changed = True
        elif refresh and isinstance(res, Refreshable):
            start = time.perf_counter()
            summary = await res.refresh(ctx)
            if summary is not None:
                engine.report(Changed(res.id, summary, _REFRESH, time.perf_counter() - start))
                changed = True
        self.refresh_from.difference_update(refresh)
        ctx.refresh = frozenset()
        if changed:
            engine.mark_changed(self)
            for child, notify in self.downstream:
                if notify:
                    child.refresh_from.add(res.id)
                child.poke()

    async def _watch(self) -> None:
        rid = self.resource.id
        try:
            await self.resource.watch(self.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.watch_failed = True
            self.engine.report(Failed(rid, _as_resource_error(rid, exc, "watch failed: ")))
            self._set_state(State.FAILED)
            return
        if not self.ready:
            self.watch_failed = True
            error = ResourceError(rid, "watch returned without calling ctx.ready()")
            self.engine.report(Failed(rid, error))
            self._set_state(State.FAILED)


_REFRESH = Change("refreshed")


def _as_resource_error(rid: str, exc: Exception, prefix: str = "") -> ResourceError:
    if isinstance(exc, ResourceError) and not prefix:
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ResourceError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    error = ResourceError(rid, prefix + text)
    error.__cause__ = exc
    return error
