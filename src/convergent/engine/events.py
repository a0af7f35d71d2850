"""The event history: every check/apply outcome of a run as one small record.

Each pass of a worker (check, and apply when something was off) ends as an
:class:`Event`: when, on which host, ``kind[name]``, the outcome, how long it took, a
one-line summary and what caused the pass:

========== =========================================================================
outcome    meaning
========== =========================================================================
kept       checked: already right, nothing done (CFEngine's "promise kept")
repaired   something was off and was changed (or a refresh ran)
failed     the check or the apply failed (each failed try, retries included)
blocked    not checked: an upstream resource failed
would-change  under noop: something is off and would be changed
========== =========================================================================

========== =========================================================================
cause      what owed the pass
========== =========================================================================
start-up   the first check of a resource in this run (or after a policy change)
drift      the resource's own watch saw something happen (inotify, a process exit)
upstream   an upstream resource changed, or a value it receives changed
refresh    an upstream resource notified it (a ``notify`` edge)
timer      ``meta.poll`` (checked every N seconds), or a ``timer`` resource's tick
========== =========================================================================

The worker knows the cause (it is told why it owes a check when it is poked) and hands
each pass to :class:`EventLog` (``Runtime.events``; None: nothing is recorded, and a
pass costs nothing more). Summaries come from the reports the engine has already
passed through :mod:`convergent.engine.redact`, and error texts are hidden the same way
(:attr:`EventLog.hide`), so an event never holds a secret. Listeners (the store in the
state directory, ``--report-json``, metrics) get each event as it is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import msgspec

from convergent.engine.report import Blocked, Changed, Log, Report, WouldChange

__all__ = [
    "BLOCKED",
    "CAUSES",
    "DRIFT",
    "FAILED",
    "KEPT",
    "OUTCOMES",
    "REFRESH",
    "REPAIRED",
    "START",
    "TIMER",
    "UPSTREAM",
    "WOULD_CHANGE",
    "Event",
    "EventLog",
    "Listener",
]

KEPT: Final = "kept"
REPAIRED: Final = "repaired"
FAILED: Final = "failed"
BLOCKED: Final = "blocked"
WOULD_CHANGE: Final = "would-change"
OUTCOMES: Final = (KEPT, REPAIRED, FAILED, BLOCKED, WOULD_CHANGE)

START: Final = "start-up"
DRIFT: Final = "drift"
UPSTREAM: Final = "upstream"
REFRESH: Final = "refresh"
TIMER: Final = "timer"
CAUSES: Final = (START, DRIFT, UPSTREAM, REFRESH, TIMER)

_KEPT_TEXT = "in the desired state"


class Event(msgspec.Struct, frozen=True):
    """One outcome. ``time``: Unix seconds at its end; ``seconds``: the pass's duration
    (check and apply); ``apply_seconds``: the apply's part of it; ``latency``: for a
    repair caused by drift, the seconds from the event that revealed the drift to the
    end of the repair (else None)."""

    time: float
    host: str
    resource: str
    outcome: str
    seconds: float
    summary: str
    cause: str
    apply_seconds: float = 0.0
    latency: float | None = None


Listener = Callable[[Event], None]


def _same(report: Report) -> Report:
    return report


def _one_line(text: str) -> str:
    """The first line of ``text`` (an error may have several; the rest is in the log)."""
    first, _, rest = text.partition("\n")
    return first + " ..." if rest.strip() else first


class EventLog:
    """Makes the events of a run and hands each to the ``listeners``.

    The engine calls :meth:`saw` with every report after hiding secrets in it; the
    worker calls :meth:`passed` at the end of each pass (and the engine :meth:`saw` with
    a ``Blocked`` report, an outcome without a pass). ``hide(report)``: the engine's
    secret hiding, for a text the reports have not carried (the error of a try that
    will be retried).
    """

    __slots__ = ("_said", "counts", "hide", "host", "listeners")

    def __init__(self, host: str, listeners: list[Listener] | None = None) -> None:
        self.host = host
        self.listeners: list[Listener] = listeners if listeners is not None else []
        self.hide: Callable[[Report], Report] = _same
        self._said: dict[
            str, Changed | WouldChange
        ] = {}  # resource -> its Changed/WouldChange of this pass
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def saw(self, report: Report) -> None:
        """A report the engine passes on (secrets hidden): keep what a pass said."""
        if isinstance(report, Changed | WouldChange):
            self._said[report.resource] = report
        elif isinstance(report, Blocked):
            text = f"{report.upstream} failed"
            self._emit(report.resource, BLOCKED, 0.0, text, UPSTREAM, 0.0, None)

    def passed(
        self,
        resource: str,
        cause: str,
        began: float,
        since: float,
        error: BaseException | None,
    ) -> None:
        """A pass of ``resource`` ended (``time.perf_counter()`` values: ``began`` when it
        started, ``since`` when its cause happened); ``error``: why it failed."""
        now = time.perf_counter()
        said = self._said.pop(resource, None) if self._said else None
        if error is not None:
            said_error = self.hide(Log(resource, str(error) or type(error).__name__))
            text = said_error.message if isinstance(said_error, Log) else ""

            prefix = resource + ": "
            text = text[len(prefix) :] if text.startswith(prefix) else text
            self._emit(resource, FAILED, now - began, _one_line(text), cause, 0.0, None)
        elif said is None:
            self._emit(resource, KEPT, now - began, _KEPT_TEXT, cause, 0.0, None)
        elif isinstance(said, Changed):
            latency = now - since if cause == DRIFT else None
            summary = _one_line(said.summary)
            self._emit(resource, REPAIRED, now - began, summary, cause, said.seconds, latency)
        else:
            change = said.change
            summary = _one_line(change.summary) if change is not None else "would change"
            self._emit(resource, WOULD_CHANGE, now - began, summary, cause, 0.0, None)

    def _emit(
        self,
        resource: str,
        outcome: str,
        seconds: float,
        summary: str,
        cause: str,
        apply_seconds: float,
        latency: float | None,
    ) -> None:
        self.counts[outcome] += 1
        event = Event(
            time.time(),
            self.host,
            resource,
            outcome,
            seconds,
            summary,
            cause,
            apply_seconds,
            latency,
        )
        for listener in self.listeners:
            listener(event)
