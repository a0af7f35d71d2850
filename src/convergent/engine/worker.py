"""One worker per vertex: runs the resource's watch, then checks and applies on events.

The meta parameters are applied here, inside the worker's own task: retries sleep in
it, the token bucket of ``limit`` is consulted before a run, semaphores are taken around
check/apply. With the default meta none of that costs a timer or a task.

A receiver (``recv``) gets its received values put into its parameters just before each
check; a sender tells the engine after each pass, which pokes the receivers whose value
changed. A worker can be stopped (the live graph changeover): its tasks are cancelled
and it never changes state again.

The worker knows the engine only as a :class:`Runtime` (the engine implements it; this
module imports no engine module above it), and the engine changes a worker only through
its methods (``link``, ``bind``, ``owe``, ``nudge``, ``poke``, ``notify``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from convergent.engine.context import WorkerContext
from convergent.engine.convergence import State
from convergent.engine.events import DRIFT, REFRESH, START, TIMER, UPSTREAM
from convergent.engine.firstpass import pass_now
from convergent.engine.meta import TokenBucket, retry_delay, retry_text, seconds_text
from convergent.engine.rare import RareFields
from convergent.engine.receive import receive
from convergent.engine.report import (
    Blocked,
    Changed,
    ChangeText,
    Failed,
    Log,
    Report,
    WouldChange,
)
from convergent.engine.watching import NOTHING, SUBSCRIBE, poll, subscribe, watch, watch_kind
from convergent.errors import ResourceError, as_resource_error
from convergent.resources.abilities import Refreshable
from convergent.resources.base import Change, Context, Meta, Params, Resource
from convergent.resources.group import Group
from convergent.resources.recv import MISSING, Binding

if TYPE_CHECKING:
    from convergent.engine.events import EventLog
    from convergent.state.db import StateDB
    from convergent.world.base import World

__all__ = ["Observer", "Predicting", "Runtime", "Worker"]


class Predicting(Protocol):
    """The predicted state of a ``--noop`` run (``engine/predict.py: Prediction``): every
    pass of that run is its ``process``."""

    async def process(self, worker: Worker) -> None: ...


class Observer(Protocol):
    """Who follows the vertex states (``engine/follow.py``: ``Observed``)."""

    @property
    def listeners(self) -> Sequence[Any]: ...
    def worker(self, worker: Worker, applying: bool) -> None: ...


class Runtime(Protocol):
    """What a worker needs from the engine that runs it (the engine implements it):

    ``spawn`` a task in the run's task group (None once the run is over); ``shared``:
    ``Context.shared``; ``report`` (secrets hidden); ``state_changed`` (convergence
    counting); ``mark_changed``: the worker changed something in this run; ``output``
    of a received binding (MISSING when none yet); ``sent``: a pass of a sender ended;
    ``intend_refreshes`` before a change, ``end_refreshes`` after its pass (``withdraw``:
    receivers it owes nothing after all), ``forget_refreshes`` once handled;
    ``before_apply``: ``meta.reverse``'s record. ``prediction``: the predicted state of a
    ``--noop`` run (None otherwise), through which every pass of that run goes;
    ``observed``: told the worker's new state (or that it starts applying) while it has
    listeners.
    """

    noop: bool
    prediction: Predicting | None
    state: StateDB | None
    world: World | None
    events: EventLog | None  # the event history (engine/events.py); None: not recorded

    @property
    def observed(self) -> Observer | None: ...
    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None: ...
    def shared(self, factory: Callable[[], Any]) -> Any: ...
    def report(self, report: Report) -> None: ...
    def state_changed(self, old: State, new: State) -> None: ...
    def mark_changed(self, worker: Worker) -> None: ...
    def output(self, binding: Binding) -> Any: ...
    def sent(self, worker: Worker) -> None: ...
    def intend_refreshes(self, worker: Worker, receivers: Collection[Worker]) -> Any: ...
    def end_refreshes(self, intent: Any, withdraw: Collection[str]) -> None: ...
    def forget_refreshes(self, worker: Worker, senders: Iterable[str]) -> None: ...
    def before_apply(self, resource: Resource[Any], ctx: Context, change: Change) -> None: ...


class Worker(RareFields):
    """Drives one resource. All methods run on the engine's event loop. The state most
    workers never change (receiving, retries, semaphores...) is :class:`RareFields`'."""

    __slots__ = (
        "cause",
        "ctx",
        "declared",
        "dirty",
        "downstream",
        "looping",
        "notifies",
        "ready",
        "refresh_from",
        "renotified",
        "resource",
        "runtime",
        "sender",
        "since",
        "state",
        "stopped",
        "tasks",
        "unsubscribe",
        "upstream",
        "woken",
    )

    def __init__(
        self,
        runtime: Runtime,
        resource: Resource[Any],
        semaphores: tuple[asyncio.Semaphore, ...] = (),
        recv: tuple[Binding, ...] = (),
        since: float | None = None,  # when made (perf_counter); one for a batch
    ) -> None:
        self._rare = None
        self.runtime = runtime
        self.resource = resource
        meta = resource.meta
        self.declared: Params = resource.params  # as the graph gave them, before recv
        if recv:
            self.recv = recv
        self.sender = (
            any(getattr(type(m), "sends", None) for m in resource.members)
            if isinstance(resource, Group)
            else bool(getattr(type(resource), "sends", None))
        )
        self.tasks: set[asyncio.Task[None]] | None = None  # made for the first task
        self.looping = False  # its loop runs (started by start(), then by kick())
        self.unsubscribe: Callable[[], None] | None = None  # a subscribe-kind's watch
        self.stopped = False
        self.upstream: list[Worker] = _NO_LINKS  # until link(); never written
        self.downstream: list[tuple[Worker, bool]] = _NO_LINKS  # (worker, notify)
        self.notifies = False  # some downstream edge is a notify edge
        self.state = State.WAITING
        self.dirty = True  # a check is owed
        self.cause = START  # why the check is owed (engine/events.py), and since when
        self.since = time.perf_counter() if since is None else since
        self.ready = False
        self.refresh_from: frozenset[str] = _NONE  # senders owed a refresh (never mutated)
        self.renotified: frozenset[str] = _NONE  # senders that notified during this pass
        if semaphores:
            self.semaphores = semaphores
        if meta.limit != _INF:
            self.bucket = TokenBucket(meta.limit, meta.burst)
        self.woken = False  # the wake flag: a pass is to run (see :meth:`wake`)
        self.ctx: Context = WorkerContext(self, resource.id)  # no bound method each

    @property
    def meta(self) -> Meta:
        """Its resource's meta parameters."""
        return self.resource.meta

    @property
    def members(self) -> tuple[Resource[Any], ...]:
        """The resources this vertex stands for: itself, or a group's members."""
        resource = self.resource
        return resource.members if isinstance(resource, Group) else (resource,)

    def wake(self) -> None:
        """Set the wake flag (``woken``); on a clear one :meth:`kick` starts the loop."""
        if not self.woken:
            self.woken = True
            self.kick()

    # -- callbacks from the resource and from other workers ---------------------------

    def _on_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.wake()

    def poke(self, cause: str = UPSTREAM) -> None:
        """Something may have changed: owe a check. Never lost, even mid-apply.

        ``cause``: what changed (engine/events.py); the first since the last pass counts.
        """
        if not self.dirty:
            self.cause = cause
            self.since = time.perf_counter()
        self.dirty = True
        if self._rare is not None:
            self._rare.found = None  # what check_now found is stale: the pass checks again
        if self.state is State.CLEAN:
            self._set_state(State.WAITING)
        self.wake()

    def _drifted(self) -> None:
        """``ctx.event()``: the resource's own watch saw something happen (a ``timer``'s
        watch: a tick)."""
        self.poke(TIMER if self.resource.id.startswith("timer[") else DRIFT)

    def _log(self, message: str) -> None:
        self.runtime.report(Log(self.resource.id, message))

    def _set_state(self, state: State) -> None:
        old = self.state
        if old is state or self.stopped:
            return
        self.state = state
        self.runtime.state_changed(old, state)
        observed = self.runtime.observed
        if observed is not None and observed.listeners:
            observed.worker(self, False)
        for child, _ in self.downstream:
            child.wake()

    def rewatch(self) -> bool:
        """Restart a watch that failed for good, if ``meta.rewatch`` says so (mgmt's Rewatch).

        Returns whether it restarted. The retry count of the watch starts again from 0.
        """
        if not (self.watch_failed and self.meta.rewatch):
            return False
        self.watch_failed = False
        self.watch_tries = 0
        self.dirty = True
        self._set_state(State.WAITING)
        self._log("restarting the watch that failed (rewatch)")
        self._spawn(watch(self), f"watch {self.resource.id}")
        return True

    def release(self) -> None:
        """Unsubscribe the watch of a kind that subscribes (once); a watch task is
        cancelled with the others instead."""
        unsubscribe = self.unsubscribe
        if unsubscribe is not None:
            self.unsubscribe = None
            unsubscribe()

    # -- wiring (by the engine, when a plan is adopted) -------------------------------

    def link(self, upstream: list[Worker], downstream: list[tuple[Worker, bool]]) -> None:
        """Its neighbours in the running plan: ``downstream`` as (worker, notify) pairs."""
        self.upstream = upstream
        self.downstream = downstream
        self.notifies = bool(downstream) and any(notify for _, notify in downstream)

    def bind(self, recv: tuple[Binding, ...]) -> None:
        """What it receives, by parameter (the bindings of the running plan)."""
        self.recv = recv

    def owe(self, senders: Iterable[str]) -> None:
        """Refreshes found pending in the state database (sender vertices)."""
        self.refresh_from = self.refresh_from.union(senders)

    def nudge(self) -> None:
        """Look again at its upstream (one it waited for may be gone); owes nothing."""
        self.wake()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker's loop (which starts the watch) in the engine's task group."""
        self.looping = True  # a wake before the task starts finds it looping
        self._spawn(self.run(), f"worker {self.resource.id}")

    def stop(self) -> list[asyncio.Task[None]]:
        """Cancel the loop and the watch; from now on the state never changes.

        Returns the cancelled tasks (await them to know they are done).
        """
        self.stopped = True
        self.release()
        tasks = list(self.tasks or ())
        for task in tasks:
            task.cancel()
        return tasks

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self.stopped:
            coro.close()
            return
        task = self.runtime.spawn(coro, name=name)
        if task is None:  # the run is over
            return
        tasks = self.tasks
        if tasks is None:
            tasks = self.tasks = set()
        tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self.tasks is not None:
            self.tasks.discard(task)
            self.tasks = self.tasks or None  # an idle worker holds no set

    def kick(self) -> None:
        """Its wake flag was set: start its loop unless it runs (or the worker stopped)."""
        if not self.looping and not self.stopped:
            self.looping = True
            self._spawn(self._loop(), f"worker {self.resource.id}")

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """The first pass of the loop: start the watch (or poll), then :meth:`_loop`."""
        self._watch_or_poll()
        await self._loop()

    def watch_first(self) -> None:
        """Start the watch (or poll) now and owe the first pass to :meth:`first_pass`
        (``engine/pool.py``); a wake meanwhile finds the loop as good as running."""
        self.looping = True
        self._watch_or_poll()

    def first_pass(self) -> None:
        """The loop after :meth:`watch_first`: ended at once when it can be
        (``engine/firstpass.py``), else in a task of its own."""
        if not pass_now(self):
            self._spawn(self._loop(), f"worker {self.resource.id}")

    def _watch_or_poll(self) -> None:
        if self.resource.meta.poll > 0:
            self._spawn(poll(self), f"poll {self.resource.id}")
        else:
            self._start_watch()

    async def _loop(self) -> None:
        """Passes while the wake flag is set; ends when it is clear (:meth:`kick`)."""
        try:
            await self._passes()
        finally:
            self.looping = False

    async def _passes(self) -> None:
        rid = self.resource.id
        while True:
            if not self.woken:
                return
            self.woken = False
            rare = self._rare  # RareFields' object, read here without a property each
            if rare is not None and rare.watch_failed:
                self._set_state(State.FAILED)  # the watch task reported why
                continue
            if not self.ready:
                if self.watch_tries:  # the watch failed and is about to be restarted
                    self._set_state(State.RETRYING)
                continue
            if not self.dirty:
                continue
            blocker = self._blocker() if self.upstream else None
            if blocker is not None:
                if self.state is not State.BLOCKED or self.blocked_by != blocker:
                    self.blocked_by = blocker
                    self._set_state(State.BLOCKED)
                    self.runtime.report(Blocked(rid, blocker))
                continue
            if self.upstream and any(up.state is not State.CLEAN for up in self.upstream):
                self.blocked_by = None
                self._set_state(State.WAITING)
                continue
            if rare is not None:
                rare.blocked_by = None
            if rare is not None and rare.bucket is not None:
                wait = rare.bucket.take(asyncio.get_running_loop().time())
                if wait > 0:  # over the limit: events meanwhile coalesce into this one run
                    self._set_state(State.WAITING)
                    await asyncio.sleep(wait)
                    self.wake()
                    continue
            self._set_state(State.RUNNING)
            semaphores = rare.semaphores if rare is not None else ()
            if semaphores:
                await self._acquire()
            self.dirty = False
            error: ResourceError | None = None
            cause, since = REFRESH if self.refresh_from else self.cause, self.since
            began = time.perf_counter()
            try:
                await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = as_resource_error(rid, exc)
            finally:
                for semaphore in semaphores:
                    semaphore.release()
            events = self.runtime.events
            if events is not None:
                events.passed(rid, cause, began, since, error)
            if error is None:
                rare = self._rare
                if rare is not None:
                    rare.tries = 0
                if not self.ready:
                    self._set_state(State.FAILED if self.watch_failed else State.RETRYING)
                else:
                    if rare is not None:
                        rare.watch_tries = 0
                    # a check is still owed, or a world value
                    waiting = self.dirty or (rare is not None and rare.waiting is not None)
                    self._set_state(State.WAITING if waiting else State.CLEAN)
            else:
                await self._failed(error)
            if self.dirty:
                self.wake()

    def _blocker(self) -> str | None:
        """The failed resource upstream that stops this one, if any."""
        for up in self.upstream:
            if up.state is State.FAILED:
                return up.resource.id
            if up.state is State.BLOCKED and up.blocked_by is not None:
                return up.blocked_by
        return None

    async def _acquire(self) -> None:
        """Take every semaphore, in sorted order; on cancellation give back those taken."""
        taken = 0
        try:
            for semaphore in self.semaphores:
                await semaphore.acquire()
                taken += 1
        except BaseException:
            for semaphore in self.semaphores[:taken]:
                semaphore.release()
            raise

    async def _failed(self, error: ResourceError) -> None:
        """Retry after the delay while retries remain, else fail for good (until an event)."""
        rid = self.resource.id
        self.tries += 1
        retry = self.meta.retry
        if retry != -1 and self.tries > retry:
            self.runtime.report(Failed.of(rid, error))
            # An event during the failed pass owes one more try: not settled yet.
            self._set_state(State.WAITING if self.dirty else State.FAILED)
            return
        delay = retry_delay(self.meta, self.tries)
        self.runtime.report(Log(rid, retry_text("retry", self.tries, retry, delay, error.message)))
        self._set_state(State.RETRYING)
        await asyncio.sleep(delay)
        self.dirty = True

    async def _attempt(self) -> None:
        """One check/apply/refresh pass, bounded by ``meta.timeout``."""
        timeout = self.resource.meta.timeout
        if timeout is None:
            await self._process()
            return
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                await self._process()
        except TimeoutError:
            if not scope.expired():
                raise
            raise ResourceError(
                self.resource.id, f"timed out after {seconds_text(timeout)} s"
            ) from None

    async def _process(self) -> None:
        res, ctx, engine = self.resource, self.ctx, self.runtime
        if engine.prediction is not None:  # --noop: through the predicted state
            await engine.prediction.process(self)
            return
        rare = self._rare
        received = receive(self, self.runtime.output) if rare is not None and rare.recv else None
        if received is MISSING:
            return
        refresh = self.refresh_from
        self.renotified = _NONE
        ctx.refresh = refresh
        noop = engine.noop or res.meta.noop
        found = rare.found if rare is not None else None  # check_now's, a moment ago
        if found is not None and rare is not None:
            rare.found = None
            change = found
        else:
            change = await res.check(ctx)
        if noop:  # read only: the state database is neither written nor cleared
            self.refresh_from = _NONE
            notifies = tuple(w.resource.id for w, notify in self.downstream if notify)
            if change is not None:
                engine.report(WouldChange(res.id, ChangeText.of(change), notifies))
            if refresh and isinstance(res, Refreshable):
                engine.report(
                    Log(res.id, f"would refresh (notified by {', '.join(sorted(refresh))})")
                )
            self._passed(received)
            return
        notified = [w for w, notify in self.downstream if notify] if self.notifies else ()
        intent = None
        changed = ok = False
        try:
            if change is not None:
                if res.meta.reverse:
                    engine.before_apply(res, ctx, change)
                if notified:  # durable before the change: a kill from here on loses nothing
                    intent = engine.intend_refreshes(self, notified)
                observed = engine.observed
                if observed is not None and observed.listeners:
                    observed.worker(self, True)
                start = time.perf_counter()
                summary = await res.apply(ctx, change)
                engine.report(
                    Changed.of(
                        res.id, summary or change.summary, change, time.perf_counter() - start
                    )
                )
                changed = True
            elif refresh and isinstance(res, Refreshable):
                if notified:  # a refresh may change something and notify onward
                    intent = engine.intend_refreshes(self, notified)
                observed = engine.observed
                if observed is not None and observed.listeners:
                    observed.worker(self, True)
                start = time.perf_counter()
                summary = await res.refresh(ctx)
                if summary is not None:
                    engine.report(
                        Changed.of(res.id, summary, _REFRESH, time.perf_counter() - start)
                    )
                    changed = True
            ok = True
        finally:
            if intent is not None:
                withdraw = (
                    ()
                    if changed or not ok
                    else [w.resource.id for w in notified if res.id not in w.refresh_from]
                )
                engine.end_refreshes(intent, withdraw)
            if not ok and intent is not None:  # at least once: it may have changed part
                for child in notified:
                    child.notify(res.id)
                    child.poke()
        ctx.refresh = _NONE
        if changed:
            engine.mark_changed(self)
            for child, notify in self.downstream:
                if notify:
                    child.notify(res.id)
                child.poke()
        if refresh:
            handled = refresh.difference(self.renotified)  # a newer change stays owed
            if handled:
                engine.forget_refreshes(self, handled)  # handled: only now may it be forgotten
                self.refresh_from = self.refresh_from.difference(handled) or _NONE
        self._passed(received)

    def notify(self, sender: str) -> None:
        """``sender`` (a vertex) changed something and owes this one a refresh."""
        self.refresh_from = self.refresh_from.union((sender,))
        self.renotified = self.renotified.union((sender,))

    def _passed(self, received: dict[str, Any] | None) -> None:
        """A pass succeeded: remember what it received, tell receivers of new outputs."""
        if received is not None:
            self.received = received
        self.ctx.received_changed = _NONE
        if self.sender:
            self.runtime.sent(self)

    def _start_watch(self) -> None:
        """Start watching: a kind that subscribes or has nothing to watch needs no task;
        a failed subscribe goes on (retries) in the watch task."""
        how = watch_kind(type(self.resource))
        if how is NOTHING:
            self._on_ready()
            return
        error = subscribe(self) if how is SUBSCRIBE else None
        if how is SUBSCRIBE and error is None:
            return
        self._spawn(watch(self, error), f"watch {self.resource.id}")


_REFRESH = Change("refreshed")
_NONE: frozenset[str] = frozenset()  # one empty set for every worker, not one each
_NO_LINKS: list[Any] = []
_INF = float("inf")  # meta.limit's default: no rate limit
