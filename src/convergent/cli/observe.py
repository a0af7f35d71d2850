"""What a ``convergent run`` records and shows beside its lines: the event history in the
state directory (``--events-keep``, ``--events-age``), and the parts the options ask for.

:class:`Observer` is made by ``run_command`` once the state directory is open; it owns
the run's :class:`~convergent.engine.events.EventLog` and its listeners, and is told
when the run is over (:meth:`Observer.finish`). Nothing here is imported by a run that
keeps no history and asks for nothing (a noop run without ``--report-json``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from convergent.engine.events import Event, EventLog

if TYPE_CHECKING:
    import argparse
    import asyncio
    from collections.abc import Callable

    from convergent.cli.control import ControlServer
    from convergent.cli.progress import Progress
    from convergent.engine.report import RunResult
    from convergent.engine.runner import Engine
    from convergent.render import TextRenderer
    from convergent.state.events import EventStore, Row
    from convergent.web.metrics import Metrics

__all__ = ["Observer", "host_name"]


class Observer:
    """The run's event log and what listens to it (the history in the state directory)."""

    def __init__(
        self,
        args: argparse.Namespace,
        state_dir: str,
        host: str,
        *,
        watching: bool = False,
        renderer: TextRenderer | None = None,
    ) -> None:
        self.events = EventLog(host)
        self.progress: Progress | None = None
        isatty = getattr(getattr(renderer, "out", None), "isatty", None)
        if renderer is not None and isatty is not None and isatty():  # terminals only
            from convergent.cli.progress import Progress, wanted

            if wanted(renderer, renderer.quiet):
                self.progress = Progress(renderer)
                self.events.listeners.append(self.progress.saw)
        self.control: ControlServer | None = None
        self.metrics: Metrics | None = None
        self.address: tuple[str, int] | None = getattr(args, "metrics", None)
        if self.address is not None:
            from convergent.web.metrics import Metrics

            self.metrics = Metrics()
            self.events.listeners.append(self.metrics.saw)
        if not args.noop and (watching or args.converged_timeout):
            from convergent.cli.control import ControlServer

            self.control = ControlServer(state_dir, self.events, os.path.abspath(args.file))
        self.store: EventStore | None = None
        self.problem: str | None = None  # why the history could not be written, once said
        self._timer: Any = None  # the pending flush (an asyncio TimerHandle)
        self.noop = bool(args.noop)
        self.code = 0  # 1 when the run report could not be written
        self.report_json: str | None = getattr(args, "report_json", None)
        self.rows: deque[Row] | None = None  # the run's events, for --report-json
        self.started = time.time()
        if self.report_json is not None:
            from convergent.state.events import MAX_COUNT

            self.rows = deque(maxlen=MAX_COUNT)
            self.events.listeners.append(self._keep)
        keep = getattr(args, "events_keep", None)
        if not args.noop and keep != 0:
            from convergent.state.events import MAX_AGE, MAX_COUNT, EventStore

            age = getattr(args, "events_age", None)
            self.store = EventStore(
                state_dir,
                max_age=MAX_AGE if age is None else age,
                max_count=MAX_COUNT if keep is None else keep,
            )
            self.events.listeners.append(self._store)

    def start(self, engine: Engine, note: Callable[..., None]) -> list[asyncio.Task[None]]:
        """The tasks that serve the run (cancelled when it ends); ``note`` prints a line."""
        import asyncio

        tasks = []
        if self.control is not None:
            tasks.append(asyncio.create_task(self.control.serve(engine), name="control socket"))
        if self.progress is not None:
            tasks.append(asyncio.create_task(self.progress.run(engine), name="progress"))
        if self.metrics is not None and self.address is not None:
            world = engine.world
            if world is not None and type(world).__name__ != "LocalWorld":  # etcd's round
                engine.world = self.metrics.metered(world)  # trips counted (web/metrics.py)
            tasks.append(asyncio.create_task(self._metrics(engine, note), name="metrics"))
        return tasks

    async def _metrics(self, engine: Engine, note: Callable[..., None]) -> None:
        assert self.metrics is not None and self.address is not None
        host, port = self.address
        try:
            await self.metrics.serve(engine, host, port, lambda url: note(f"metrics: {url}"))
        except OSError as exc:  # the run goes on, without metrics
            note(f"convergent: --metrics {host}:{port}: {exc.strerror or exc}", error=True)

    def _keep(self, event: Event) -> None:
        assert self.rows is not None
        self.rows.append(_row(event))

    # -- the history ----------------------------------------------------------------------

    def _store(self, event: Event) -> None:
        store = self.store
        assert store is not None
        store.pending.append(
            (
                event.time,
                event.host,
                event.resource,
                event.outcome,
                event.seconds,
                event.summary,
                event.cause,
            )
        )
        if self._timer is None:
            import asyncio

            from convergent.state.events import FLUSH

            self._timer = asyncio.get_running_loop().call_later(FLUSH, self.flush)

    def flush(self) -> None:
        """Write the buffered events; a failure is said once and the run goes on."""
        self._timer = None
        if self.store is None:
            return
        from convergent.errors import ConvergentError

        try:
            self.store.flush(time.time())
        except ConvergentError as exc:
            if self.problem is None:
                self.problem = str(exc)
                from convergent.render import say

                say(f"convergent: {exc}; the run goes on without recording its events")

    def finish(self, result: RunResult | None) -> None:
        """The run is over: write what is buffered, close the history."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        if self.store is not None:
            self.store.close()
        if self.report_json is not None and self.rows is not None and result is not None:
            from convergent.cli.report import build_report, write_report

            report = build_report(
                self.rows,
                host=self.events.host,
                since=self.started,
                until=time.time(),
                run=result,
                noop=self.noop,
                with_events=True,
            )
            try:
                write_report(self.report_json, report)
            except OSError as exc:
                from convergent.render import say

                say(f"convergent: --report-json {self.report_json}: {exc.strerror or exc}")
                self.code = 1


def _row(event: Event) -> Row:
    return (
        event.time,
        event.host,
        event.resource,
        event.outcome,
        event.seconds,
        event.summary,
        event.cause,
    )


def host_name(args: argparse.Namespace) -> str:
    """The host the events are about: ``--hostname``, else this machine's name."""
    name = getattr(args, "hostname", None)
    return name if isinstance(name, str) and name else os.uname().nodename
