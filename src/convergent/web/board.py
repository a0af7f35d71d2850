"""The live model behind the web view: every vertex's state, outcome, last events and
error, fed by the engine's vertex-state stream (``Engine.follow_states``) and its
reports (the engine's reporter is wrapped: each report still reaches the terminal first).

The reports arrive with every secret already hidden (``engine/redact.py``); the board
keeps no Change and no exception, only their texts.

An outcome is what the passes of a vertex came to, in the words of a compliance
report: ``kept`` (checked clean), ``repaired`` (changed something), ``failed``,
``blocked`` (an upstream failed), ``would-change`` (under noop). ``repaired`` stays
until another outcome than ``kept`` replaces it: the check that follows a repair (a
file's own write wakes its watch) finds nothing to do, and the repair is what to show.

Subscribers (the event stream's clients) get a queue of ``(event, data)`` pairs; one
that falls more than :data:`QUEUE` events behind is dropped (its stream ends, the
browser reconnects and starts again from a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from convergent.engine.report import (
    Blocked,
    Changed,
    Converged,
    Failed,
    Log,
    Report,
    VertexState,
    WouldChange,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from convergent.engine.runner import Engine

__all__ = ["EVENTS", "QUEUE", "Board", "Subscriber", "VertexView"]

EVENTS = 20  # events kept per vertex
QUEUE = 1000  # events a subscriber may fall behind before it is dropped
MAX_TEXT = 2000  # characters of one event's text


class VertexView:
    """What the page knows of one vertex."""

    __slots__ = ("applied", "error", "events", "outcome", "repairs", "state")

    def __init__(self, state: str) -> None:
        self.state = state
        self.outcome: str | None = None
        self.repairs = 0  # changes made in this run
        self.error: str | None = None
        self.applied = False  # the pass going on changed (or would change) something
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)

    def brief(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "outcome": self.outcome,
            "repairs": self.repairs,
            "error": self.error,
        }


class Subscriber:
    """One client of the event stream."""

    __slots__ = ("dropped", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue(QUEUE)
        self.dropped = False

    def put(self, item: tuple[str, Any] | None) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True  # the stream ends; the browser reconnects
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(None)


class Board:
    """Follows ``engine`` from now on (call :meth:`close` to stop)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.views: dict[str, VertexView] = {
            vid: VertexView(state) for vid, state in engine.vertex_states().items()
        }
        self.generation = 1  # counts graph changes: the page fetches the graph again
        self.converged = engine.converged
        self.subscribers: set[Subscriber] = set()
        self._unfollow = engine.follow_states(self.on_state)
        self._unfollow_world = engine.observe().add_world(self.on_world)
        self._world_due = False  # a hosts event is on its way (on_world)
        self._reporter = engine.reporter
        engine.reporter = self.on_report

    def close(self) -> None:
        """Stop following the engine; end every subscriber's stream."""
        self._unfollow()
        self._unfollow_world()
        if self.engine.reporter == self.on_report:
            self.engine.reporter = self._reporter
        for subscriber in list(self.subscribers):
            subscriber.put(None)
        self.subscribers.clear()

    # -- the engine's side -------------------------------------------------------------

    def on_state(self, record: VertexState) -> None:
        vid, state = record.resource, record.state
        if state == "removed":
            if self.views.pop(vid, None) is not None:
                self._graph_changed()
            return
        view = self.views.get(vid)
        if view is None:
            view = self.views[vid] = VertexView(state)
            self._graph_changed()
        previous, view.state = view.state, state
        if state == "checking":
            view.applied = False
        elif state == "applying":
            view.applied = True
        elif state == "converged":
            view.error = None
            if previous in ("checking", "applying") and not view.applied:
                if view.outcome != "repaired":  # a repair stays shown (the check after
                    view.outcome = "kept"  # a file's own write finds nothing to do)
                self._event(vid, view, "kept", "checked: nothing to do")
        elif state == "failed":
            view.outcome = "failed"
        elif state == "blocked":
            view.outcome = "blocked"
        self.converged = self.engine.converged
        self._send("state", {"id": vid, "converged": self.converged, **view.brief()})

    def on_world(self) -> None:
        """The other hosts changed (alive, converged, exports): a ``hosts`` event with
        the list ``/api/hosts`` gives, one per turn of the loop however many keys the
        turn's watch answers told (a transaction of exports is many)."""
        if self.subscribers and not self._world_due:
            self._world_due = True
            asyncio.get_running_loop().call_soon(self._send_world)

    def _send_world(self) -> None:
        self._world_due = False
        if self.subscribers:
            self._send("hosts", self.world())

    def on_report(self, report: Report) -> None:
        self._reporter(report)
        with contextlib.suppress(Exception):  # the view never stops the run
            self._record(report)

    def _record(self, report: Report) -> None:
        if isinstance(report, Converged):
            self.converged = True
            self._send("converged", {"failed": report.failed, "blocked": report.blocked})
            return
        rid = getattr(report, "resource", None)
        if rid is None:
            return
        vid = self.engine.observe().plan.vertex_of.get(rid, rid)
        view = self.views.get(vid)
        if view is None:
            return  # a report of no vertex ("world", "cluster", a refused export)
        prefix = f"{rid}: " if rid != vid else ""
        if isinstance(report, Changed):
            view.repairs += 1
            view.applied = True
            view.outcome = "repaired"
            self._event(vid, view, "repaired", prefix + report.summary, report.seconds)
        elif isinstance(report, WouldChange):
            view.outcome = "would-change"
            view.applied = True
            summary = report.change.summary if report.change is not None else "would change"
            self._event(vid, view, "would-change", prefix + summary)
        elif isinstance(report, Failed):
            text = report.message
            if report.stderr_tail:
                text += "\n" + report.stderr_tail
            view.error = _cut(text)
            view.outcome = "failed"
            self._event(vid, view, "failed", text)
        elif isinstance(report, Blocked):
            view.error = f"not checked: {report.upstream} failed"
            self._event(vid, view, "blocked", view.error)
        elif isinstance(report, Log):
            self._event(vid, view, "log", prefix + report.message)
        else:
            return
        self._send("state", {"id": vid, "converged": self.converged, **view.brief()})

    # -- the page's side ---------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def world(self) -> dict[str, Any]:
        """The other hosts of the world (name, alive, converged, exports) and this host's
        exports (both empty without a world)."""
        seen = self.engine.observe().world()
        if seen is None:
            return {"hosts": [], "exports": []}
        hosts = [
            {"name": h.name, "alive": h.alive, "converged": h.converged, "exports": h.exports}
            for h in seen.hosts
        ]
        return {"hosts": hosts, "exports": list(seen.exports)}

    def snapshot(self) -> dict[str, Any]:
        """Every vertex's brief state (what a new stream starts with)."""
        return {
            "generation": self.generation,
            "converged": self.converged,
            "vertices": {vid: view.brief() for vid, view in self.views.items()},
        }

    # -- inside ------------------------------------------------------------------------

    def _graph_changed(self) -> None:
        self.generation += 1
        self._send("graph", {"generation": self.generation})

    def _event(
        self, vid: str, view: VertexView, outcome: str, text: str, seconds: float | None = None
    ) -> None:
        event: dict[str, Any] = {"time": self.clock(), "outcome": outcome, "text": _cut(text)}
        if seconds is not None:
            event["seconds"] = round(seconds, 6)
        view.events.append(event)
        self._send("event", {"id": vid, **event})

    def _send(self, name: str, data: Any) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.put((name, data))
            if subscriber.dropped:
                self.subscribers.discard(subscriber)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
