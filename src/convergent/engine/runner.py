"""The engine: one worker task per vertex under one TaskGroup, convergence, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from convergent.engine.report import Converged, Report, Reporter, RunResult
from convergent.engine.worker import State, Worker
from convergent.errors import GraphError
from convergent.graph.core import Graph
from convergent.resources.base import Resource
from convergent.resources.group import prepare

if TYPE_CHECKING:
    from convergent.state.db import StateDB

__all__ = ["Engine", "run_graph"]

S = TypeVar("S")


def _ignore(report: Report) -> None:
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
    handled (under noop it is only read).
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
        graph.validate()
        graph = prepare(graph)  # automatic edges, then automatic grouping
        if sema is not None and sema < 1:
            raise ValueError(f"sema: a semaphore of size {sema} would never let anything run")
        self.graph = graph
        self.noop = noop
        self.converged_timeout = converged_timeout
        self.report = reporter
        self.state = state
        semaphores = _semaphores(graph, sema)
        self._workers: dict[str, Worker] = {
            vid: Worker(self, res, semaphores.get(vid, ())) for vid, res in graph.vertices.items()
        }
        for edge in graph.edges():
            src, dst = self._workers[edge.source], self._workers[edge.target]
            src.downstream.append((dst, edge.notify))
            dst.upstream.append(src)
        if state is not None:
            for receiver, senders in state.pending_refreshes().items():
                worker = self._workers.get(receiver)
                if worker is not None:
                    worker.refresh_from.update(senders)
        self._unsettled = len(self._workers)
        self._failed = 0
        self._blocked = 0
        self._changed: set[str] = set()
        self._settled_event = asyncio.Event()
        self._unsettled_event = asyncio.Event()
        self._unsettled_event.set()
        self._stop = asyncio.Event()
        self._services: dict[Callable[[], Any], Any] = {}
        self._tg: asyncio.TaskGroup | None = None

    # -- called by workers ------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tg is not None, "spawn() outside of run()"
        self._tg.create_task(coro, name=name)

    def shared(self, factory: Callable[[], S]) -> S:
        service = self._services.get(factory)
        if service is None:
            service = self._services[factory] = factory()
        result: S = service
        return result

    def mark_changed(self, worker: Worker) -> None:
        self._changed.add(worker.resource.id)

    def state_changed(self, old: State, new: State) -> None:
        self._failed += (new is State.FAILED) - (old is State.FAILED)
        self._blocked += (new is State.BLOCKED) - (old is State.BLOCKED)
        if old.settled == new.settled:
            return
        if new.settled:
            self._unsettled -= 1
            if self._unsettled == 0:
                self._unsettled_event.clear()
                self._settled_event.set()
                self.report(Converged(self._failed, self._blocked))
        else:
            self._unsettled += 1
            if self._unsettled == 1:
                self._settled_event.clear()
                self._unsettled_event.set()

    @property
    def converged(self) -> bool:
        return self._unsettled == 0

    # -- control ----------------------------------------------------------------------

    def rewatch(self) -> list[str]:
        """Restart every watch that failed for good on a vertex with ``meta.rewatch: true``.

        mgmt's Rewatch: the live graph changeover calls this when it applies a new graph.
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
                for vid, worker in self._workers.items():
                    tg.create_task(worker.run(), name=f"worker {vid}")
                stop_task = tg.create_task(self._stop.wait(), name="stop")
                until_done = tg.create_task(self._until_converged_long_enough(), name="convergence")
                await asyncio.wait({stop_task, until_done}, return_when=asyncio.FIRST_COMPLETED)
                interrupted = stop_task.done()
                raise _Done
        except* _Done:
            pass
        finally:
            self._tg = None
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


def _semaphores(
    graph: Graph[Resource[Any]], size: int | None
) -> dict[str, tuple[asyncio.Semaphore, ...]]:
    """Each vertex's semaphores in acquisition order (sorted by id; the global one first).

    Raises GraphError when one id is given two sizes.
    """
    made: dict[str, tuple[asyncio.Semaphore, int, str]] = {}
    found: dict[str, tuple[asyncio.Semaphore, ...]] = {}
    every = (asyncio.Semaphore(size),) if size is not None else ()
    for vid, resource in graph.vertices.items():
        pairs = resource.meta.semaphores() if resource.meta.sema else ()
        if not pairs:
            if every:
                found[vid] = every
            continue
        own = []
        for sema_id, sema_size in sorted(pairs):
            known = made.get(sema_id)
            if known is None:
                known = made[sema_id] = (asyncio.Semaphore(sema_size), sema_size, vid)
            elif known[1] != sema_size:
                raise GraphError(
                    f"semaphore '{sema_id}' has size {sema_size} in {vid} but {known[1]} in "
                    f"{known[2]}; give it the same size everywhere"
                )
            own.append(known[0])
        found[vid] = every + tuple(own)
    return found


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
