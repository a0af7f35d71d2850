"""The engine: one worker task per vertex under one TaskGroup, convergence, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from convergent.engine.report import Converged, Report, Reporter, RunResult
from convergent.engine.worker import State, Worker
from convergent.graph.core import Graph
from convergent.resources.base import Resource

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
    """

    def __init__(
        self,
        graph: Graph[Resource[Any]],
        *,
        noop: bool = False,
        converged_timeout: float | None = None,
        reporter: Reporter = _ignore,
    ) -> None:
        graph.validate()
        self.graph = graph
        self.noop = noop
        self.converged_timeout = converged_timeout
        self.report = reporter
        self._workers: dict[str, Worker] = {
            vid: Worker(self, res) for vid, res in graph.vertices.items()
        }
        for edge in graph.edges():
            src, dst = self._workers[edge.source], self._workers[edge.target]
            src.downstream.append((dst, edge.notify))
            dst.upstream.append(src)
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


class _Done(Exception):
    """Raised inside the task group to cancel every worker at the end of a run."""


async def run_graph(
    graph: Graph[Resource[Any]],
    *,
    noop: bool = False,
    converged_timeout: float | None = None,
    reporter: Reporter = _ignore,
) -> RunResult:
    """Run ``graph`` to convergence; see :class:`Engine`."""
    engine = Engine(graph, noop=noop, converged_timeout=converged_timeout, reporter=reporter)
    return await engine.run()
