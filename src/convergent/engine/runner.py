"""The engine: one worker task per vertex under one TaskGroup, the run and its end, and
the live graph changeover (:meth:`Engine.swap`).

It implements the :class:`~convergent.engine.worker.Runtime` its workers talk to and
hands the work to its parts: :mod:`~convergent.engine.convergence` (counting),
:mod:`~convergent.engine.exchange` (send/recv, secrets), :mod:`~convergent.engine.refreshes`
(pending refreshes in the state database), :mod:`~convergent.engine.changeover` (plans,
the diff of a swap, wiring, reversal).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from convergent.engine.changeover import (
    Plan,
    Swapped,
    link,
    plan_swap,
    record_reverse,
    reverse,
    same_graph,
    same_upstream,
)
from convergent.engine.collect import Collector, local_part, uses_world
from convergent.engine.convergence import Convergence, State
from convergent.engine.exchange import Exchange
from convergent.engine.pool import FirstPasses
from convergent.engine.refreshes import Intent, Refreshes
from convergent.engine.report import Converged, Log, Report, Reporter, RunResult, VertexState
from convergent.engine.worker import Predicting, Worker
from convergent.graph.core import Graph
from convergent.resources.base import Change, Context, Resource
from convergent.resources.group import Group
from convergent.resources.recv import Binding

if TYPE_CHECKING:
    from convergent.engine.events import EventLog
    from convergent.engine.follow import Observed
    from convergent.engine.hosts import Hosts
    from convergent.state.db import StateDB
    from convergent.world.base import World

__all__ = ["CLOSE_TIMEOUT", "Engine"]

S = TypeVar("S")
CLOSE_TIMEOUT = 5.0  # seconds a shared service's aclose() may take at the end of a run
WORLD_RETRY = 0.1  # seconds before the first retry of a failed world operation (doubling)
BURST = 0.5  # seconds: the longest a burst of world changes waits for its new graph (W9b,
# 50 agents on 2 cores: 0.25 s made ~35 graphs per agent, 0.5 s cuts their CPU by about a fifth)
SPACING = 10  # in a burst, the wait for the next graph is this many times the last one's cost
# (W9b: 4 -> 10 cut the agents' CPU by ~0.4 s of ~8 s; W9a, 3 agents, 0.135 -> 0.144 s)


def _ignore(report: Report) -> None:
    pass


def _nothing() -> None:
    pass


class Engine:
    """Runs a validated graph until it has been converged for ``converged_timeout`` seconds
    (None: until :meth:`stop`).

    Every vertex gets a worker; a worker checks its resource only when every upstream
    vertex is clean, so the graph runs upstream first and independent branches run at
    the same time.

    ``sema=N``: every resource also takes one semaphore of size N around check/apply
    (``sema=1`` runs one resource at a time). ``state``: the host's state database;
    pending refresh notifications are loaded from it at start and kept in it until
    handled (under noop it is only read). ``world``: every resource's ``ctx.world``
    (None: the local world over ``state``); whoever gives it opens and closes it.
    Exported resources are published there and ``graph.collect`` takes other hosts'
    (``engine/collect.py``). Values of secret outputs never reach ``reporter``
    (``engine/redact.py``).

    Raises GraphError for a dangling edge, a cycle, a wrong ``recv`` or a semaphore id
    with two sizes.
    """

    def __init__(
        self,
        graph: Graph[Resource[Any]],
        *,
        noop: bool = False,
        converged_timeout: float | None = None,
        reporter: Reporter = _ignore,
        sema: int | None = None,
        state: StateDB | None = None,
        world: World | None = None,
        events: EventLog | None = None,
    ) -> None:
        if sema is not None and sema < 1:
            raise ValueError(f"sema: a semaphore of size {sema} would never let anything run")
        self._base = graph  # the graph as given; the running one adds what is collected
        self._hosts: Hosts | None = None  # the other agents, once the world is needed
        # A world other than the local one: convergence is cluster-wide.
        self._cluster = world is not None and type(world).__name__ != "LocalWorld"
        self._flipped = asyncio.Event()  # this graph's convergence flipped (to publish)
        self._flip_wake = asyncio.Event()  # the same, for the wait for everyone
        self._world_wake = asyncio.Event()
        self._world_held = uses_world(graph)
        # Other agents' converged keys are watched only to wait for them or to show them.
        self._converged_wanted = self._cluster and converged_timeout is not None
        plan = Plan(local_part(graph))  # automatic edges, then automatic grouping
        self.noop = noop
        self.converged_timeout = converged_timeout
        self.reporter = reporter
        self.state = state
        self.world = world
        self._every = (asyncio.Semaphore(sema),) if sema is not None else ()
        self._pool: dict[str, tuple[asyncio.Semaphore, int]] = {}
        # Known secrets from the start: a command may print one before its holder ran.
        self._exchange = Exchange(state.secret_values() if state is not None else ())
        self.prediction: Predicting | None = None  # --noop: the predicted state (predict.py)
        if noop:
            from convergent.engine.predict import Prediction

            self.prediction = Prediction(self._exchange.secrets.add)
        self._exchange.policy(graph.secrets, graph.held)  # secret vars of the policy
        self._convergence = Convergence(self._settled)
        self._workers: dict[str, Worker] = {}
        self._first = FirstPasses(self.spawn)  # first passes a batch at a time (pool.py)
        self.observed: Observed | None = None  # made by observe(), when first asked for
        self._changed: set[str] = set()
        self._repairs = 0  # passes that changed something (a resource may count many)
        if events is not None:
            events.hide = self._exchange.hide
        self.events = events
        self._stop = asyncio.Event()
        self.ended = False  # the run's end came (stop() or convergence): it cleans up now
        self._services: dict[Callable[[], Any], Any] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._swap_lock: asyncio.Lock | None = None
        self.graph = plan.graph
        self._plan = plan
        self._refreshes = Refreshes(state, plan)
        new = self._adopt(plan, {})
        self._load_refreshes(new)
        # Not converged before the exports are published and the collected ones are in.
        self._convergence.holds += self._world_held
        self._convergence.recount(self._states(), report=False)

    # -- the Runtime a worker talks to ---------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` in the run's task group; None (and ``coro`` closed) after the run."""
        if self._tg is None:
            coro.close()
            return None
        try:
            return self._tg.create_task(coro, name=name)
        except RuntimeError:  # the group is shutting down: the run ends, nothing starts
            coro.close()
            return None

    def shared(self, factory: Callable[[], S]) -> S:
        service = self._services.get(factory)
        if service is None:
            service = self._services[factory] = factory()
        result: S = service
        return result

    def report(self, report: Report) -> None:
        """Pass ``report`` to the reporter, with every known secret hidden."""
        hidden = self._exchange.hide(report)
        if self.events is not None:
            self.events.saw(hidden)
        self.reporter(hidden)

    def mark_changed(self, worker: Worker) -> None:
        self._changed.add(worker.resource.id)
        self._repairs += 1

    def state_changed(self, old: State, new: State) -> None:
        self._convergence.changed(old, new)

    def output(self, binding: Binding) -> Any:
        """The current value of ``binding``'s output (MISSING when the sender has none)."""
        return self._exchange.output(binding)

    def sent(self, worker: Worker) -> None:
        """After a pass of a sender: remember secret values, poke the receivers whose value
        changed."""
        self._exchange.sent(worker)

    def intend_refreshes(self, worker: Worker, receivers: Collection[Worker]) -> Intent:
        """Write down, before ``worker`` changes anything, the refreshes it will owe."""
        return self._refreshes.intend(
            (m.id for m in worker.members), {r.resource.id for r in receivers}
        )

    def end_refreshes(self, intent: Intent, withdraw: Collection[str] = ()) -> None:
        self._refreshes.end(intent, withdraw)

    def forget_refreshes(self, worker: Worker, senders: Iterable[str]) -> None:
        """``worker`` handled the refreshes of ``senders`` (vertex identities)."""
        self._refreshes.forget((m.id for m in worker.members), senders)

    def before_apply(self, resource: Resource[Any], ctx: Context, change: Change) -> None:
        """``meta.reverse``: let the kind keep what it needs to undo ``change`` later."""
        record_reverse(resource, ctx, change, self._context)

    def _context(self, rid: str) -> Context:
        """A Context for ``rid`` outside its worker (a member, a resource being undone)."""
        return Context(
            rid,
            ready=_nothing,
            event=_nothing,
            log=lambda message: self.report(Log(rid, message)),
            shared=self.shared,
            state=self.state,
            world=self.world,
        )

    # -- convergence --------------------------------------------------------------------

    @property
    def converged(self) -> bool:
        return self._convergence.converged

    def _settled(self, failed: int, blocked: int) -> None:
        self.report(Converged(failed, blocked))

    def _states(self) -> Iterable[State]:
        return (w.state for w in self._workers.values())

    def _recount(self) -> None:
        self._convergence.recount(self._states())

    def observe(self) -> Observed:
        """What an observer in this process sees of the run: see ``engine/follow.py``."""
        from convergent.engine.follow import Observed  # not on the start-up path

        if self.observed is None:
            hosts, want = (lambda: self._hosts), self._want_converged
            self.observed = Observed(
                lambda: self._workers, lambda: self._plan, self._exchange, hosts, want
            )
        return self.observed

    def follow_states(self, listener: Callable[[VertexState], None]) -> Callable[[], None]:
        return self.observe().add(listener)

    def _want_converged(self) -> None:
        """An observer follows the world: the other agents' converged keys are watched too."""
        if not self._converged_wanted:
            self._converged_wanted = self._cluster
            self._world_wake.set()

    def _world_seen_changed(self) -> None:
        if self.observed is not None:  # observe().add_world(listener) follows the world
            self.observed.world_changed()

    def vertex_states(self) -> dict[str, str]:
        return self.observe().states()

    # -- control ----------------------------------------------------------------------

    def rewatch(self) -> list[str]:
        """Restart every watch that failed for good on a vertex with ``meta.rewatch: true``.

        mgmt's Rewatch: :meth:`swap` calls this when it applies a new graph.
        Returns the restarted resources.
        """
        return [vid for vid, worker in self._workers.items() if worker.rewatch()]

    def stop(self) -> None:
        """Ask the run to end (what SIGINT and SIGTERM do); safe to call from a signal handler."""
        self._stop.set()

    async def run(self) -> RunResult:
        start = time.perf_counter()
        interrupted = False
        convergence = self._convergence
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._swap_lock = asyncio.Lock()
                self._first.start(self._workers.values())  # watches now, passes in batches
                if self.converged:  # an empty graph
                    self.report(Converged(convergence.failed, convergence.blocked))
                self._world_wake.set()
                tg.create_task(self._world_loop(), name="world")
                if self._cluster:
                    self._convergence.on_flip = self._on_flip
                    tg.create_task(self._publish_converged(), name="converged")
                stop_task = tg.create_task(self._stop.wait(), name="stop")
                until_done = tg.create_task(
                    self._everyone_long_enough(self.converged_timeout)
                    if self._cluster
                    else convergence.long_enough(self.converged_timeout),
                    name="convergence",
                )
                await asyncio.wait({stop_task, until_done}, return_when=asyncio.FIRST_COMPLETED)
                interrupted = stop_task.done()
                self.ended = True
                raise _Done
        except* _Done:
            pass
        finally:
            self._tg = None
            for worker in self._workers.values():
                worker.release()
            await self._leave_world()
            await self._close_services()
        return RunResult(
            resources=len(self._workers),
            changed=len(self._changed),
            repairs=self._repairs,
            failed=convergence.failed,
            blocked=convergence.blocked,
            seconds=time.perf_counter() - start,
            converged=self.converged,
            interrupted=interrupted,
            retrying=sum(state is State.RETRYING for state in self._states()),
        )

    async def _close_services(self) -> None:
        """Close every ``ctx.shared`` service, in the order they were made: await its
        ``aclose()`` if it has one (for at most ``CLOSE_TIMEOUT`` seconds), else call its
        ``close()``. A failure to close is not the run's failure."""
        services = list(self._services.values())
        self._services.clear()
        for service in services:
            aclose = getattr(service, "aclose", None)
            with contextlib.suppress(Exception):
                if aclose is not None:
                    closing = aclose()
                    if isinstance(closing, Awaitable):
                        async with asyncio.timeout(CLOSE_TIMEOUT):
                            await closing
                    continue
                close = getattr(service, "close", None)
                if close is not None:
                    close()

    # -- the live graph changeover ------------------------------------------------------

    async def swap(
        self,
        graph: Graph[Resource[Any]],
        *,
        planned: Callable[[Swapped], None] | None = None,
    ) -> Swapped:
        """Replace the running graph by ``graph``, applied as a diff; call it while
        :meth:`run` runs (swaps are applied one at a time, in order).

        Unchanged vertices (same members, each with the same kind, name, declared
        parameters, meta and recv) keep their worker and watch and are not checked again,
        unless the set of resources upstream of them changed. Changed ones restart (the
        new resource object is checked), new ones start, removed ones stop; a removed
        resource with ``meta: {reverse: true}`` whose kind is Reversible is undone
        (reported as ``reversed: ...``; under noop as ``would reverse: ...``). Then
        :meth:`rewatch`. The graph counts as not converged until the swap is done.
        ``planned`` is called with the diff once it is known, before anything changes
        (``convergent run`` prints it there, ahead of the reports the swap causes).

        Raises GraphError (the running graph is left as it is) for a graph the engine
        cannot run, RuntimeError when the run is not going on.
        """
        lock = self._swap_lock
        if self._tg is None or lock is None:
            raise RuntimeError("swap() needs a running engine: call it while run() runs")
        async with lock:
            if self._tg is None:
                raise RuntimeError("the run ended before the swap could start")
            hosts = self._hosts
            running = hosts.collector.graph_for(graph) if hosts is not None else local_part(graph)
            self._exchange.policy(graph.secrets, graph.held)
            done = await self._swap(running, planned)
            self._base = graph
            self._world_wake.set()  # publish what it exports, collect what it collects
            return done

    async def _swap(
        self, graph: Graph[Resource[Any]], planned: Callable[[Swapped], None] | None
    ) -> Swapped:
        old = self._plan
        old_members = dict(self._exchange.members)
        done, plan, keep = plan_swap(old, graph, old_members, self._workers)
        going = [w for vid, w in self._workers.items() if vid not in keep]
        if planned is not None:
            planned(done)
        self._convergence.holds += 1
        self._recount()
        try:
            stopped: list[asyncio.Task[None]] = []
            for worker in going:
                stopped.extend(worker.stop())
            new = self._adopt(plan, keep)
            self._recount()
            if stopped:
                await asyncio.wait(stopped)
            removed = set(done.removed)
            noop = self.noop
            for mid in reversed(old.source.topological_order()) if removed else ():
                if mid not in removed:
                    continue
                if await reverse(
                    old_members[mid], self._context(mid), noop=noop, report=self.report
                ):
                    self._changed.add(mid)
                    self._repairs += 1
                    done.reversed.append(mid)
            if self._tg is None:
                raise RuntimeError("the run ended during the swap")
            self._load_refreshes(new)
            self._first.start(new.values())
            self.rewatch()
        finally:
            self._convergence.holds -= 1
            self._recount()
        return done

    def _adopt(self, plan: Plan, keep: dict[str, Worker]) -> dict[str, Worker]:
        """Make ``plan`` the running one: workers for its vertices (``keep``: the running
        ones that stay), wired along its edges. Returns the new workers, not started."""
        before = {vid: w.upstream for vid, w in keep.items()}  # link() puts new lists
        workers: dict[str, Worker] = {}
        new: dict[str, Worker] = {}
        now = time.perf_counter()  # one float for the batch, not one per worker
        for vid, payload in plan.graph.vertices.items():
            worker = keep.get(vid)
            recv = plan.bindings.get(vid, ())
            if worker is None:
                sema = self._semaphores_for(payload)
                worker = new[vid] = Worker(self, payload, sema, recv, since=now)
            else:
                worker.bind(recv)
                if isinstance(payload, Group) and isinstance(worker.resource, Group):
                    worker.resource.senders = payload.senders  # notifiers may be new vertices
            workers[vid] = worker
        self._plan = plan
        self._refreshes.plan = plan
        if self.observed is not None:
            self.observed.adopted(self._workers, workers)
        self._workers = workers
        self.graph = link(plan, workers, kept=bool(keep))
        self._exchange.wire(plan, workers)
        for vid, worker in keep.items():
            if not same_upstream(before[vid], worker.upstream):
                worker.poke()  # what it depends on changed: check it again
            elif worker.dirty:
                worker.nudge()  # an upstream it waited for may be gone
        return new

    def _load_refreshes(self, workers: dict[str, Worker]) -> None:
        """Pending refreshes from the state database for these (new) workers."""
        for vid, senders in self._refreshes.pending(workers).items():
            workers[vid].owe(senders)

    def _semaphores_for(self, resource: Resource[Any]) -> tuple[asyncio.Semaphore, ...]:
        """The semaphores of ``resource`` in acquisition order (the global one first, then
        by id); one semaphore per id and size, shared across swaps."""
        if not resource.meta.sema:
            return self._every
        own = []
        for sema_id, size in sorted(resource.meta.semaphores()):
            known = self._pool.get(sema_id)
            if known is None or known[1] != size:
                known = self._pool[sema_id] = (asyncio.Semaphore(size), size)
            own.append(known[0])
        return self._every + tuple(own)

    # -- the world: exports, collected resources -------------------------------------------

    def the_world(self) -> World:
        """The run's world: the one given, else the local world every resource sees."""
        if self.world is not None:
            return self.world
        from convergent.world.local import LocalWorldFactory

        world: World = self.shared(LocalWorldFactory(self.state))
        return world

    async def _world_loop(self) -> None:
        """Publish this host's exports and collect other hosts' whenever the graph or the
        world changed (events of one burst become one new graph)."""
        loop = asyncio.get_running_loop()
        last = spent = -1.0
        failures = 0
        while True:
            await self._world_wake.wait()
            # One event after a quiet time is taken at once; in a burst (hosts publishing
            # their exports one by one) the loop waits SPACING times as long as the last new
            # graph took (at most BURST s): making graphs takes at most 1/11 of the time.
            await asyncio.sleep(min(SPACING * spent, BURST) if loop.time() - last < BURST else 0)
            self._world_wake.clear()
            base = self._base
            try:
                made = await self._sync_world(base)
            except Exception as exc:  # the world failed (etcd away...): try again later
                failures += 1
                delay = min(WORLD_RETRY * 2 ** (failures - 1), 5.0)
                self.report(Log("world", f"{exc}; trying again in {delay:g} s"))
                loop.call_later(delay, self._world_wake.set)
                continue
            failures = 0
            last = loop.time()
            spent = made  # making the graph, not the world's round trips (W9a)
            if self._world_held and base is self._base:
                self._world_held = False
                self._convergence.holds -= 1
                self._recount()

    async def _sync_world(self, base: Graph[Resource[Any]]) -> float:
        """Publish, withdraw, collect; the seconds spent making and swapping the graph."""
        hosts = self._hosts
        if hosts is None and not (self._cluster or uses_world(base)):
            return 0.0  # nothing exported or collected, one host: the world is not needed
        world = self.the_world()
        if hosts is None:  # the world's modules are loaded when a policy uses the world
            from convergent.engine.hosts import Hosts
            from convergent.world.keys import EXPORTS, host_key

            collector = Collector(world.hostname, self.report)
            if not self.noop:  # under noop nothing is published, nothing withdrawn
                mine = await world.get_prefix(host_key(world.hostname, EXPORTS) + "/")
                collector.published = dict(mine)  # an agent before this one left some
            hosts = self._hosts = Hosts(world, collector, self._world_wake.set)
            hosts.seen_changed = self._world_seen_changed
        collector = hosts.collector
        wanted = collector.wanted(base)
        if self.noop:  # nothing is published (published stays {}); collected as if it were
            collector.pretend = wanted
            wanted = {}
        gone = sorted(collector.published.keys() - wanted.keys())
        if gone:
            await world.delete_many(gone)  # one revision: one wake for the others
        changed = {k: v for k, v in wanted.items() if collector.published.get(k) != v}
        if changed:
            await world.set_many(changed, lease=True)  # one revision: one wake for the others
        collector.published = wanted
        if base.collect or self._cluster:
            others = self._converged_wanted
            if not hosts.watching or (others and not hosts.converged_loaded):
                await hosts.watch(converged=others)
                self._on_flip()  # publish this agent's state, look at everyone's
        elif hosts.watching:
            hosts.stop()
        lock = self._swap_lock
        if lock is None or base is not self._base:
            return 0.0
        async with lock:
            if self._tg is None or base is not self._base:
                return 0.0
            began = time.perf_counter()
            graph = collector.graph_for(base)
            if not same_graph(graph, self._plan.source):
                await self._swap(graph, None)
            return time.perf_counter() - began

    async def _publish_converged(self) -> None:
        """Cluster-wide convergence: keep this agent's converged key up to date."""
        from convergent.engine.hosts import keep_published

        await keep_published(
            lambda: self._hosts,
            lambda: self.converged,
            self._flipped,
            lambda text: self.report(Log("cluster", text)),
            WORLD_RETRY,
        )

    def _on_flip(self) -> None:
        self._flipped.set()
        self._flip_wake.set()

    async def _everyone_long_enough(self, seconds: float | None) -> None:
        """Return once this graph and every other live agent have stayed converged
        together for ``seconds`` (None: never)."""
        from convergent.engine.hosts import everyone_long_enough

        await everyone_long_enough(
            seconds,
            lambda: self.converged,
            lambda: self._hosts,
            self._flip_wake,
            lambda text: self.report(Log("cluster", text)),
        )

    async def _leave_world(self) -> None:
        """At the end of the run: stop watching, withdraw this host's exports."""
        if self._hosts is not None:
            await self._hosts.leave(CLOSE_TIMEOUT)


class _Done(Exception):
    """Raised inside the task group to cancel every worker at the end of a run."""
