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
from typing import TYPE_CHECKING, Any

from convergent.engine.events import Event, EventLog

if TYPE_CHECKING:
    import argparse

    from convergent.engine.report import RunResult
    from convergent.state.events import EventStore

__all__ = ["Observer", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` as seconds (ValueError says why)."""
    value = text.strip()
    unit = _UNITS.get(value[-1:].lower()) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration: give seconds, or a number with s, m, h, d or w "
            "(e.g. 1h, 7d)"
        ) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: give a duration of 0 or more")
    return seconds


class Observer:
    """The run's event log and what listens to it (the history in the state directory)."""

    def __init__(self, args: argparse.Namespace, state_dir: str, host: str) -> None:
        self.events = EventLog(host)
        self.store: EventStore | None = None
        self.problem: str | None = None  # why the history could not be written, once said
        self._timer: Any = None  # the pending flush (an asyncio TimerHandle)
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

    # -- the history ----------------------------------------------------------------------

    def _store(self, event: Event) -> None:
        store = self.store
        assert store is not None
        store.add(
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


def host_name(args: argparse.Namespace) -> str:
    """The host the events are about: ``--hostname``, else this machine's name."""
    name = getattr(args, "hostname", None)
    return name if isinstance(name, str) and name else os.uname().nodename
