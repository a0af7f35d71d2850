"""Pending refresh notifications, kept in the state database so that none is ever lost.

The intent is durable before the change it stands for: a sender with ``notify`` edges
writes one row per (receiver member, sender member) *before* its ``apply`` (and before a
``refresh`` that may notify onward), so a kill -9 at any later point (mid-apply, right
after a file's rename) finds the row at the next start. After the pass:

- the change was made (apply ran, or refresh said it did something): the rows stay;
- the pass failed (apply or refresh raised, timed out or was cancelled): the rows stay
  too, and the receivers are owed the refresh in this run as well. A failed apply may
  have changed part of the thing (a command ran half-way, a file was renamed into place
  before a later step failed), and a refresh too many restarts a service that did not
  need it while a refresh lost leaves one running on an old configuration: delivery is
  *at least once*;
- a ``refresh`` that did nothing: the rows written for this pass are withdrawn, except
  for receivers that were already owed a refresh by this sender.

A receiver removes its rows only after it handled them, never a row whose sender has an
intent in flight or notified it again during the receiver's own pass (that row stands
for a newer change). Rows are kept per member, not per vertex: a group's identity may
not exist after a restart or a regroup, its members' do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convergent.engine.changeover import Plan
    from convergent.state.db import StateDB

__all__ = ["Intent", "Refreshes"]

Intent = dict[str, list[str]]  # sender member -> receiver members, as written


class Refreshes:
    """The engine's side of the ``refreshes`` table; a no-op without a state database."""

    __slots__ = ("_inflight", "plan", "state")

    def __init__(self, state: StateDB | None, plan: Plan) -> None:
        self.state = state
        self.plan = plan  # the running plan (the engine sets it on every changeover)
        self._inflight: dict[str, int] = {}  # sender member -> intents being acted on

    @property
    def writes(self) -> bool:
        return self.state is not None and not self.state.readonly

    def rows(self, members: Iterable[str], receivers: Collection[str]) -> Intent:
        """The rows ``members`` (a sender vertex's) owe the vertices ``receivers``."""
        plan = self.plan
        rows: Intent = {}
        for member in members:
            for edge in plan.source.out_edges(member):
                if edge.notify and plan.vertex_of.get(edge.target) in receivers:
                    rows.setdefault(member, []).append(edge.target)
        return rows

    def intend(self, members: Iterable[str], receivers: Collection[str]) -> Intent:
        """Write the rows before the change is made; they are in flight until :meth:`end`."""
        rows = self.rows(members, receivers)
        for sender in rows:
            self._inflight[sender] = self._inflight.get(sender, 0) + 1
        state = self.state
        if state is not None and not state.readonly:
            for sender, targets in rows.items():
                state.add_refreshes(sender, targets)
        return rows

    def end(self, intent: Intent, withdraw: Collection[str] = ()) -> None:
        """The pass is over; ``withdraw``: receiver vertices whose rows are taken back
        (the pass changed nothing and they were not owed a refresh before it)."""
        for sender in intent:
            left = self._inflight[sender] - 1
            if left:
                self._inflight[sender] = left
            else:
                del self._inflight[sender]
        state = self.state
        if not withdraw or state is None or state.readonly:
            return
        vertex_of = self.plan.vertex_of
        for sender, targets in intent.items():
            for target in targets:
                if vertex_of.get(target) in withdraw:
                    state.remove_refreshes(target, (sender,))

    def forget(self, members: Iterable[str], senders: Iterable[str]) -> None:
        """The receiver ``members`` (a vertex's) handled the refreshes of ``senders``
        (vertex identities); rows of a sender with an intent in flight stay."""
        state = self.state
        if state is None or state.readonly:
            return
        plan = self.plan
        expanded: set[str] = set()
        for sender in senders:
            expanded.add(sender)
            expanded.update(plan.members(sender))
        expanded.difference_update(self._inflight)
        if expanded:
            for member in members:
                state.remove_refreshes(member, expanded)

    def pending(self, vertices: Mapping[str, object]) -> dict[str, set[str]]:
        """Pending senders (as vertices now) of each of ``vertices``, from the database;
        a sender no longer in the graph keeps its own identity."""
        if self.state is None or not vertices:
            return {}
        vertex_of = self.plan.vertex_of
        found: dict[str, set[str]] = {}
        for receiver, senders in self.state.pending_refreshes().items():
            vid = vertex_of.get(receiver, "")
            if vid in vertices:
                found.setdefault(vid, set()).update(vertex_of.get(s, s) for s in senders)
        return found
