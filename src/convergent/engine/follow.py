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

Once the run has a world that it exchanges through (it exports, collects, or its
convergence is cluster-wide), :meth:`Observed.world` tells what this agent sees there: a
:class:`WorldSeen` (the other hosts, this host's exports, where each collected resource
comes from); None before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convergent.engine.convergence import State
from convergent.engine.report import VertexState

if TYPE_CHECKING:
    from convergent.engine.changeover import Plan
    from convergent.engine.exchange import Exchange
    from convergent.engine.hosts import Hosts
    from convergent.engine.worker import Worker

__all__ = ["STATE_NAMES", "HostSeen", "Observed", "WorldSeen"]

STATE_NAMES = {
    State.WAITING: "waiting",
    State.RUNNING: "checking",
    State.RETRYING: "retrying",
    State.CLEAN: "converged",
    State.FAILED: "failed",
    State.BLOCKED: "blocked",
}

Listener = Callable[[VertexState], None]


@dataclass(frozen=True, slots=True)
class HostSeen:
    """Another agent of the world: ``alive`` (its session lives), ``converged`` (it
    published so), ``exports`` (how many resources it exports)."""

    name: str
    alive: bool
    converged: bool
    exports: int


@dataclass(frozen=True, slots=True)
class WorldSeen:
    """What this agent (``host``) sees of its world, a copy made when asked: ``hosts``
    (the others, by name), ``exports`` (the ids of the resources this host exports: under
    noop, would export), ``origins`` (each collected resource's id -> the host that
    exported it)."""

    host: str
    hosts: tuple[HostSeen, ...]
    exports: tuple[str, ...]
    origins: dict[str, str]


def world_seen(hosts: Hosts) -> WorldSeen:
    """A copy of what ``hosts`` (and its collector) know now."""
    from convergent.world.keys import EXPORTS, host_key, split_host_key

    me = hosts.hostname
    collector = hosts.collector
    counts: dict[str, int] = {}
    for key in collector.exports:
        split = split_host_key(key)
        if split is not None:
            counts[split[0]] = counts.get(split[0], 0) + 1
    names = (hosts.alive | hosts.converged | counts.keys()) - {me}
    others = tuple(
        HostSeen(name, name in hosts.alive, name in hosts.converged, counts.get(name, 0))
        for name in sorted(names)
    )
    mine = host_key(me, EXPORTS) + "/"
    published = collector.pretend or collector.published
    exports = tuple(sorted(k[len(mine) :] for k in published if k.startswith(mine)))
    return WorldSeen(me, others, exports, dict(collector.origins))


class Observed:
    """The listeners of a run's vertex states and the last state told of each vertex;
    ``plan``: the running plan (``source``, ``graph``, ``bindings``, ``vertex_of``; read
    it, never change it); ``hide(text)``: ``text`` with every secret the run knows hidden,
    as in its reports."""

    __slots__ = (
        "_hosts",
        "_plan",
        "_want_world",
        "_workers",
        "hide",
        "listeners",
        "shown",
        "world_listeners",
    )

    def __init__(
        self,
        workers: Callable[[], Mapping[str, Worker]],
        plan: Callable[[], Plan],
        exchange: Exchange,
        hosts: Callable[[], Hosts | None] = lambda: None,
        want_world: Callable[[], None] = lambda: None,
    ) -> None:
        self._workers = workers
        self._plan = plan
        self._hosts = hosts
        self._want_world = want_world  # a world listener came: the run shows everyone
        self.hide: Callable[[str], str] = exchange.secrets.hide
        self.listeners: list[Listener] = []
        self.world_listeners: list[Callable[[], None]] = []
        self.shown: dict[str, str] = {}  # vertex -> the last state told (while followed)

    @property
    def plan(self) -> Plan:
        return self._plan()

    def world(self) -> WorldSeen | None:
        """What the run sees of its world now (read-only copy), or None while it does not
        exchange through one."""
        hosts = self._hosts()
        return world_seen(hosts) if hosts is not None else None

    def add(self, listener: Listener) -> Callable[[], None]:
        """Follow from now on; returns the function that stops it."""
        self.listeners.append(listener)

        def unfollow() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)
            if not self.listeners:
                self.shown.clear()

        return unfollow

    def add_world(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever :meth:`world` would answer differently; returns
        the function that stops it."""
        self.world_listeners.append(listener)
        self._want_world()

        def unfollow() -> None:
            if listener in self.world_listeners:
                self.world_listeners.remove(listener)

        return unfollow

    def world_changed(self) -> None:
        """What the run sees of its world changed: every world listener learns it (one
        that raises is ignored)."""
        for listener in tuple(self.world_listeners):
            with contextlib.suppress(Exception):
                listener()

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
