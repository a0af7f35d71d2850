"""What an observer in the process (a web view, a status or progress display) sees of a
run: ``Engine.observe()`` makes (once) and returns its :class:`Observed`: the vertex-state
listeners, the running plan, and ``hide`` (texts with the run's secrets hidden).

``Engine.follow_states(listener)`` calls ``listener`` with a :class:`VertexState` each
time a vertex changes state, on the engine's loop (it must be quick; an exception is
dropped), and returns the function that stops it; ``Engine.vertex_states()`` is each
vertex's state now. A worker tells its state only while someone follows, so a run nobody
follows makes no record at all (and does not import this module). The names are
:data:`VERTEX_STATES`: a worker's :class:`State`, with ``running`` told apart as
``checking`` and ``applying`` (the worker says when its apply or refresh starts),
``clean`` as ``converged``, and ``removed`` for a vertex gone with a new graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from convergent.engine.convergence import State
from convergent.engine.report import VertexState

if TYPE_CHECKING:
    from convergent.engine.changeover import Plan
    from convergent.engine.exchange import Exchange
    from convergent.engine.worker import Worker

__all__ = ["STATE_NAMES", "Observed"]

STATE_NAMES = {
    State.WAITING: "waiting",
    State.RUNNING: "checking",
    State.RETRYING: "retrying",
    State.CLEAN: "converged",
    State.FAILED: "failed",
    State.BLOCKED: "blocked",
}

Listener = Callable[[VertexState], None]


class Observed:
    """The listeners of a run's vertex states and the last state told of each vertex;
    ``plan``: the running plan (``source``, ``graph``, ``bindings``, ``vertex_of``; read
    it, never change it); ``hide(text)``: ``text`` with every secret the run knows hidden,
    as in its reports."""

    __slots__ = ("_plan", "_workers", "hide", "listeners", "shown")

    def __init__(
        self,
        workers: Callable[[], Mapping[str, Worker]],
        plan: Callable[[], Plan],
        exchange: Exchange,
    ) -> None:
        self._workers = workers
        self._plan = plan
        self.hide: Callable[[str], str] = exchange.secrets.hide
        self.listeners: list[Listener] = []
        self.shown: dict[str, str] = {}  # vertex -> the last state told (while followed)

    @property
    def plan(self) -> Plan:
        return self._plan()

    def add(self, listener: Listener) -> Callable[[], None]:
        """Follow from now on; returns the function that stops it."""
        self.listeners.append(listener)

        def unfollow() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)
            if not self.listeners:
                self.shown.clear()

        return unfollow

    def tell(self, vid: str, name: str) -> None:
        """Every listener learns that ``vid`` is now ``name`` (a listener that raises is
        ignored: an observer never stops the run)."""
        self.shown[vid] = name
        record = VertexState(vid, name)
        for listener in tuple(self.listeners):
            with contextlib.suppress(Exception):
                listener(record)

    def worker(self, worker: Worker, applying: bool) -> None:
        self.tell(worker.resource.id, "applying" if applying else STATE_NAMES[worker.state])

    def adopted(self, old: Mapping[str, Worker], new: Mapping[str, Worker]) -> None:
        """A plan was adopted: ``old`` the workers before, ``new`` those made for it."""
        if not self.listeners:
            return
        for vid in old.keys() - new.keys():
            self.tell(vid, "removed")
        for vid, worker in new.items():
            if old.get(vid) is not worker:
                self.tell(vid, STATE_NAMES[worker.state])

    def states(self) -> dict[str, str]:
        """Each vertex's state now."""
        shown = self.shown
        states = {}
        for vid, worker in self._workers().items():
            name = STATE_NAMES[worker.state]
            if name == "checking" and shown.get(vid) == "applying":
                name = "applying"
            states[vid] = name
        return states
