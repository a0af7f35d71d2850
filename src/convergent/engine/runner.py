"""The engine: one worker task per vertex under one TaskGroup, convergence, shutdown,
send/recv between workers and the live graph changeover (:meth:`Engine.swap`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from convergent.engine.changeover import Grouper, Plan, Swapped
from convergent.engine.recv import MISSING, Binding, bindings, sends
from convergent.engine.redact import Secrets, hide_report
from convergent.engine.report import (
    Changed,
    Converged,
    Failed,
    Log,
    Report,
    Reporter,
    RunResult,
    WouldChange,
)
from convergent.engine.worker import SETTLED, State, Worker, as_resource_error
from convergent.graph.core import Graph
from convergent.resources.abilities import PlansReverse, RecordsReverse, Reversible
from convergent.resources.base import Change, Context, Resource
from convergent.resources.group import Group

if TYPE_CHECKING:
    from convergent.state.db import StateDB

__all__ = ["Engine", "run_graph"]

S = TypeVar("S")


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
    handled (under noop it is only read). Values of secret outputs never reach
    ``reporter`` (``engine/redact.py``).

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
    ) -> None:
        if sema is not None and sema < 1:
            raise ValueError(f"sema: a semaphore of size {sema} would never let anything run")
        plan = Plan(graph)  # automatic edges, then automatic grouping
        self.noop = noop
        self.converged_timeout = converged_timeout
        self.reporter = reporter
        self.state = state
        self._every = (asyncio.Semaphore(sema),) if sema is not None else ()
        self._pool: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._secrets = Secrets()
        self._held: dict[str, tuple[str, ...]] = {}  # receiver -> params holding a secret
        self._receivers: dict[str, list[tuple[Worker, Binding]]] = {}  # by sender member
        self._members: dict[str, Resource[Any]] = {}  # member id -> running resource
        self._workers: dict[str, Worker] = {}
        self._holds = 0  # swaps in progress: the graph is not converged meanwhile
        self._unsettled = 0
        self._failed = 0
        self._blocked = 0
        self._changed: set[str] = set()
        self._settled_event = asyncio.Event()
        self._unsettled_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._services: dict[Callable[[], Any], Any] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._swap_lock: asyncio.Lock | None = None
        self.graph = plan.graph
        self._plan = plan
        new = self._adopt(plan, {})
        self._load_refreshes(new)
        self._recount(report=False)

    # -- called by workers ------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` in the run's task group; None (and ``coro`` closed) after the run."""
        if self._tg is None:
            coro.close()
            return None
        return self._tg.create_task(coro, name=name)

    def shared(self, factory: Callable[[], S]) -> S:
        service = self._services.get(factory)
        if service is None:
            service = self._services[factory] = factory()
        result: S = service
        return result

    def report(self, report: Report) -> None:
        """Pass ``report`` to the reporter, with every known secret hidden."""
        if self._secrets:
            report = hide_report(report, self._secrets, self._held)
        self.reporter(report)

    def mark_changed(self, worker: Worker) -> None:
        self._changed.add(worker.resource.id)

    def state_changed(self, old: State, new: State) -> None:
        self._failed += (new is State.FAILED) - (old is State.FAILED)
        self._blocked += (new is State.BLOCKED) - (old is State.BLOCKED)
        settled = new in SETTLED
        if (old in SETTLED) == settled:
            return
        if settled:
            self._unsettled -= 1
            if self._unsettled == 0:
                self._now_settled(report=True)
        else:
            self._unsettled += 1
            if self._unsettled == 1:
                self._now_unsettled()

    def output(self, binding: Binding) -> Any:
        """The current value of ``binding``'s output (MISSING when the sender has none)."""
        sender = self._members.get(binding.sender)
        if sender is None:
            return MISSING
        outputs = sender.outputs() if hasattr(sender, "outputs") else {}
        return outputs.get(binding.output, MISSING)

    def sent(self, worker: Worker) -> None:
        """After a pass of a sender: remember secret values, poke the receivers whose value
        differs from the one they last tried."""
        for member in worker.members:
            declared = sends(member)
            if not declared:
                continue
            outputs = member.outputs()  # type: ignore[attr-defined]
            for name, output in declared.items():
                if output.secret and name in outputs:
                    self._secrets.add(outputs[name])
            for receiver, binding in self._receivers.get(member.id, ()):
                value = outputs.get(binding.output, MISSING)
                if value != receiver.tried.get(binding.param, MISSING):
                    receiver.poke()

    def save_refreshes(self, worker: Worker, receivers: Iterable[Worker]) -> None:
        """Write the refreshes ``worker`` owes ``receivers``, member by member (a group's
        identity may not exist after a restart; its members do)."""
        if self.state is None:
            return
        plan = self._plan
        targets = {r.resource.id for r in receivers}
        rows: dict[str, list[str]] = {}
        for member in worker.members:
            for edge in plan.source.out_edges(member.id):
                if edge.notify and plan.vertex_of.get(edge.target) in targets:
                    rows.setdefault(member.id, []).append(edge.target)
        for sender, members in rows.items():
            self.state.add_refreshes(sender, members)

    def forget_refreshes(self, worker: Worker, senders: Iterable[str]) -> None:
        """``worker`` handled the refreshes of ``senders`` (vertex identities)."""
        if self.state is None or self.state.readonly:
            return
        plan = self._plan
        expanded: set[str] = set()
        for sender in senders:
            expanded.add(sender)
            expanded.update(plan.members(sender))
        for member in worker.members:
            self.state.remove_refreshes(member.id, expanded)

    def before_apply(self, resource: Resource[Any], ctx: Context, change: Change) -> None:
        """``meta.reverse``: let the kind keep what it needs to undo ``change`` later."""
        if isinstance(resource, RecordsReverse) and isinstance(resource, Reversible):
            resource.record_reverse(ctx, change)

    # -- convergence --------------------------------------------------------------------

    @property
    def converged(self) -> bool:
        return self._unsettled == 0

    def _now_settled(self, *, report: bool) -> None:
        self._unsettled_event.clear()
        self._settled_event.set()
        if report:
            self.report(Converged(self._failed, self._blocked))

    def _now_unsettled(self) -> None:
        self._settled_event.clear()
        self._unsettled_event.set()

    def _recount(self, *, report: bool = True) -> None:
        """Count the states of every worker again (after workers came or went)."""
        workers = self._workers.values()
        was = self._unsettled
        self._unsettled = self._holds + sum(not w.state.settled for w in workers)
        self._failed = sum(w.state is State.FAILED for w in workers)
        self._blocked = sum(w.state is State.BLOCKED for w in workers)
        if self._unsettled == 0:
            if was or not self._settled_event.is_set():
                self._now_settled(report=report and was > 0)
        elif was == 0 or not self._unsettled_event.is_set():
            self._now_unsettled()

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
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._swap_lock = asyncio.Lock()
                for worker in self._workers.values():
                    worker.start()
                if self.converged:  # an empty graph
                    self.report(Converged(self._failed, self._blocked))
                stop_task = tg.create_task(self._stop.wait(), name="stop")
                until_done = tg.create_task(self._until_converged_long_enough(), name="convergence")
                await asyncio.wait({stop_task, until_done}, return_when=asyncio.FIRST_COMPLETED)
                interrupted = stop_task.done()
                raise _Done
        except* _Done:
            pass
        finally:
            self._tg = None
            for worker in self._workers.values():
                worker.release()
            self._close_services()
        return RunResult(
            resources=len(self._workers),
            changed=len(self._changed),
            failed=self._failed,
            blocked=self._blocked,
            seconds=time.perf_counter() - start,
            converged=self.converged,
            interrupted=interrupted,
        )

    async def _until_converged_long_enough(self) -> None:
        """Return once the graph has stayed converged for ``converged_timeout`` seconds."""
        if self.converged_timeout is None:
            await asyncio.Event().wait()
        timeout = max(0.0, self.converged_timeout or 0.0)
        while True:
            await self._settled_event.wait()
            try:
                async with asyncio.timeout(timeout):
                    await self._unsettled_event.wait()
            except TimeoutError:
                return

    def _close_services(self) -> None:
        for service in self._services.values():
            close = getattr(service, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        self._services.clear()

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
            return await self._swap(graph, planned)

    async def _swap(
        self, graph: Graph[Resource[Any]], planned: Callable[[Swapped], None] | None
    ) -> Swapped:
        old = self._plan
        graph.validate()
        received = bindings(graph)  # members are compared before they are grouped
        changed = [
            mid
            for mid, resource in graph.vertices.items()
            if mid in old.source and not self._unchanged(mid, resource, received)
        ]
        done = Swapped(
            added=[mid for mid in graph.vertices if mid not in old.source],
            removed=[mid for mid in old.source.vertices if mid not in graph],
            changed=changed,
        )
        restart = set(changed)
        keep_groups = [g for g in old.groups() if not restart.intersection(g)]
        alone = {
            mid
            for mid, vid in old.vertex_of.items()
            if vid == mid and mid in graph and mid not in restart
        }
        plan = Plan(graph, Grouper(set(received), keep_groups, alone))
        keep: dict[str, Worker] = {}
        for vid, payload in plan.graph.vertices.items():
            worker = self._workers.get(vid)
            if worker is not None and _same_vertex(worker, payload, restart):
                keep[vid] = worker
        going = [w for vid, w in self._workers.items() if vid not in keep]
        old_members = dict(self._members)
        if planned is not None:
            planned(done)
        self._holds += 1
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
            order = [m for m in reversed(old.source.topological_order()) if m in removed]
            for mid in order:
                if await self._reverse(old_members[mid]):
                    done.reversed.append(mid)
            if self._tg is None:
                raise RuntimeError("the run ended during the swap")
            self._load_refreshes(new)
            for worker in new.values():
                worker.start()
            self.rewatch()
        finally:
            self._holds -= 1
            self._recount()
        return done

    def _unchanged(
        self, mid: str, resource: Resource[Any], new_bindings: dict[str, tuple[Binding, ...]]
    ) -> bool:
        """Whether member ``mid`` (in the running graph) is the same as ``resource``."""
        running = self._members.get(mid)
        if running is None or type(running) is not type(resource):
            return False
        worker = self._workers.get(self._plan.vertex_of.get(mid, ""))
        declared = worker.declared if worker is not None and worker.resource is running else None
        params = declared if declared is not None else running.params
        return (
            params == resource.params
            and running.meta == resource.meta
            and self._plan.bindings.get(mid, ()) == new_bindings.get(mid, ())
        )

    def _adopt(self, plan: Plan, keep: dict[str, Worker]) -> dict[str, Worker]:
        """Make ``plan`` the running one: workers for its vertices (``keep``: the running
        ones that stay), wired along its edges. Returns the new workers, not started."""
        before = {vid: _upstream_members(w) for vid, w in keep.items()}
        workers: dict[str, Worker] = {}
        new: dict[str, Worker] = {}
        for vid, payload in plan.graph.vertices.items():
            worker = keep.get(vid)
            recv = plan.bindings.get(vid, ())
            if worker is None:
                worker = new[vid] = Worker(self, payload, self._semaphores_for(payload), recv)
            else:
                worker.recv = recv
                if isinstance(payload, Group) and isinstance(worker.resource, Group):
                    worker.resource.senders = payload.senders  # notifiers may be new vertices
            workers[vid] = worker
        self._plan = plan
        self._workers = workers
        if keep:  # the engine's graph holds the running resources
            graph: Graph[Resource[Any]] = Graph()
            for worker in workers.values():
                graph.add(worker.resource)
            for edge in plan.graph.edges():
                graph.add_edge(edge.source, edge.target, notify=edge.notify)
            self.graph = graph
        else:
            self.graph = plan.graph
        for worker in workers.values():
            worker.upstream = []
            worker.downstream = []
        for edge in plan.graph.edges():
            src, dst = workers[edge.source], workers[edge.target]
            src.downstream.append((dst, edge.notify))
            dst.upstream.append(src)
        self._members = {m.id: m for w in workers.values() for m in w.members}
        self._receivers = {}
        self._held = {}
        for receiver, pairs in plan.bindings.items():
            worker = workers[plan.vertex_of[receiver]]
            for binding in pairs:
                self._receivers.setdefault(binding.sender, []).append((worker, binding))
            secret = tuple(b.param for b in pairs if b.secret)
            if secret:
                self._held[receiver] = secret
        for vid, worker in keep.items():
            if _upstream_members(worker) != before[vid]:
                worker.poke()  # what it depends on changed: check it again
            else:
                worker.wake.set()  # an upstream it waited for may be gone
        return new

    def _load_refreshes(self, workers: dict[str, Worker]) -> None:
        """Pending refreshes from the state database for these (new) workers; rows are
        kept per member and mapped to the vertex each member is in now."""
        if self.state is None or not workers:
            return
        vertex_of = self._plan.vertex_of
        for receiver, senders in self.state.pending_refreshes().items():
            worker = workers.get(vertex_of.get(receiver, ""))
            if worker is not None:
                worker.refresh_from.update(vertex_of.get(s, s) for s in senders)

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

    async def _reverse(self, resource: Resource[Any]) -> bool:
        """Undo a resource that left the graph, if it asks for it; True when undone."""
        if not (resource.meta.reverse and isinstance(resource, Reversible)):
            return False
        rid = resource.id
        ctx = Context(
            rid,
            ready=_nothing,
            event=_nothing,
            log=lambda message: self.report(Log(rid, message)),
            shared=self.shared,
            state=self.state,
        )
        try:
            if self.noop or resource.meta.noop:
                if isinstance(resource, PlansReverse):
                    plan = resource.plan_reverse(ctx)
                    if plan is not None:
                        self.report(WouldChange(rid, Change(f"would reverse: {plan}")))
                else:
                    self.report(WouldChange(rid, Change("would reverse")))
                return False
            start = time.perf_counter()
            summary = await resource.reverse(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.report(Failed(rid, as_resource_error(rid, exc, "reverse: ")))
            return False
        if summary is None:
            return False
        text = f"reversed: {summary}"
        self._changed.add(rid)
        self.report(Changed(rid, text, Change(text), time.perf_counter() - start))
        return True


def _upstream_members(worker: Worker) -> frozenset[str]:
    return frozenset(m.id for up in worker.upstream for m in up.members)


def _same_vertex(worker: Worker, payload: Resource[Any], restart: set[str]) -> bool:
    """Whether a running worker can stand for the new vertex ``payload`` (same identity)."""
    if worker.stopped or isinstance(worker.resource, Group) != isinstance(payload, Group):
        return False
    members = payload.members if isinstance(payload, Group) else (payload,)
    return not any(m.id in restart for m in members) and worker.resource.meta == payload.meta


class _Done(Exception):
    """Raised inside the task group to cancel every worker at the end of a run."""


async def run_graph(
    graph: Graph[Resource[Any]],
    *,
    noop: bool = False,
    converged_timeout: float | None = None,
    reporter: Reporter = _ignore,
    sema: int | None = None,
    state: StateDB | None = None,
) -> RunResult:
    """Run ``graph`` to convergence; see :class:`Engine`."""
    engine = Engine(
        graph,
        noop=noop,
        converged_timeout=converged_timeout,
        reporter=reporter,
        sema=sema,
        state=state,
    )
    return await engine.run()
