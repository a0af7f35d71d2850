"""The predicted state of one noop run, and a noop pass that reads through it.

Under ``--noop`` nothing is applied, so without a prediction a resource downstream of
one that would change reads the host as it is, not as the real run will leave it: a
``file`` copying a source that would change says nothing, a receiver of a new password
is not checked. :class:`Prediction` (made by the engine for a ``--noop`` run only; a real
run never makes one and pays nothing) keeps, for this run and in memory only:

- what every resource that would (or may) change would leave behind
  (:class:`~convergent.resources.predicted.Effects`, from the kind's ``predict``):
  paths (exists, content, mode, owner, link target, modification order), accounts
  (a ``user``'s uid, a ``group``'s gid, or their absence), outputs
  (``kv``'s value, a ``password``'s "new secret"), and the commands whose effect no
  kind describes;
- the refreshes a predicted change would send (``would refresh X``);
- each resource's outcome: *would* change (exact) or *may* change (with the reason).

A worker's noop pass (:meth:`Prediction.process`) reads through it: the kind's
``check_predicted`` instead of ``check`` when something upstream would change (the
``Predicts`` ability), received values from the senders' predicted outputs, a refresh
from a predicted change. Only what resources *upstream* of a resource would leave behind
is visible to it: what an unrelated resource does comes before or after it in the real
run, nobody knows which. Where exactness is impossible the outcome is a *may*, reported
as :class:`~convergent.engine.report.MayChange` with its reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from convergent.engine.receive import receive
from convergent.engine.report import ChangeText, Log, MayChange, WouldChange
from convergent.errors import ResourceError
from convergent.resources.abilities import Refreshable
from convergent.resources.base import Change
from convergent.resources.group import Group
from convergent.resources.predicted import UNKNOWN, Account, Effects, Node, Uncertain
from convergent.resources.recv import MISSING, Binding

if TYPE_CHECKING:
    from convergent.engine.worker import Worker
    from convergent.resources.base import Resource

__all__ = ["Prediction"]

_SECRET_NOTE = " (secret)"


class Prediction:
    """What a noop run predicts; one per ``--noop`` engine (see the module docstring).

    ``hide(value)``: make ``value`` a secret of the run (hidden from every report), for
    the stand-ins of new secrets.
    """

    __slots__ = (
        "_commands",
        "_hide",
        "_now",
        "_order",
        "_secrets",
        "accounts",
        "nodes",
        "notified",
        "outcomes",
        "outputs",
    )

    def __init__(self, hide: Callable[[str], None]) -> None:
        self._hide = hide
        self._now = time.time_ns()
        self._order = 0
        self._secrets: dict[str, str] = {}  # resource -> the stand-in of its new secret
        self.nodes: dict[str, Node] = {}  # path -> what it would be
        self.accounts: dict[str, Account] = {}  # user:NAME / group:NAME -> what it would be
        self.outputs: dict[str, dict[str, Any]] = {}  # member -> predicted outputs
        self.outcomes: dict[str, tuple[bool, str]] = {}  # vertex -> (certain, reason)
        self.notified: dict[str, dict[str, bool]] = {}  # vertex -> sender -> certain
        # vertex -> what it does that no kind describes (a command, a kind's change)
        self._commands: dict[str, str] = {}

    # -- what the kinds read -----------------------------------------------------------

    def new_secret(self, resource: str) -> str:
        token = self._secrets.get(resource)
        if token is None:
            import secrets

            # Private-use characters: no summary or path holds one, so hiding the stand-in
            # (and every piece of it) hides nothing else.
            token = "".join(chr(0xE000 + secrets.randbelow(0x1900)) for _ in range(24))
            self._secrets[resource] = token
            self._hide(token)
        return token

    def is_new_secret(self, value: object) -> bool:
        return isinstance(value, str) and any(t in value for t in self._secrets.values())

    # -- one noop pass -----------------------------------------------------------------

    async def process(self, worker: Worker) -> None:
        """The noop pass of ``worker``: check through the prediction, report would/may,
        remember what it would leave behind. Read only, like every noop pass."""
        res, ctx, runtime = worker.resource, worker.ctx, worker.runtime
        vid = res.id
        self._forget(worker)
        view = _View(self, worker)
        notifies = tuple(w.resource.id for w, notify in worker.downstream if notify)
        received = None
        secret = False
        if worker.recv:
            raw = {b.param: self._output(b, runtime.output) for b in worker.recv}
            unknown = [b for b in worker.recv if raw[b.param] is UNKNOWN]
            if unknown:
                what = ", ".join(b.source for b in unknown)
                self._may(worker, view, "may change", f"it receives {what}, known once it ran")
                worker._passed(None)
                return
            secret = any(self.is_new_secret(v) for v in raw.values())
            received = receive(worker, lambda b: raw[b.param])
            if received is MISSING:
                return
        pending = frozenset(worker.refresh_from)  # from the state database
        worker.renotified = frozenset()
        ctx.refresh = pending
        senders = self.notified.get(vid, {})
        change: Change | None = None
        try:
            change = await self._check(res, ctx, view)
            refresh = None
            if change is None and senders and isinstance(res, Refreshable):
                refresh = await self._refresh(worker, view, sorted(senders))
        except Uncertain as exc:
            self._may(worker, view, exc.summary, exc.reason, notifies)
            worker.refresh_from = frozenset()
            worker._passed(received)
            return
        except ResourceError as exc:
            if not view.changed_above:  # nothing upstream changes: it fails for real too
                raise
            # e.g. an owner a `user` upstream would create: the check cannot be made yet
            reason = f"its check cannot be made before {view.describe().removeprefix('upstream ')}"
            self._may(worker, view, "may change", f"{reason}: {exc.message}", notifies)
            worker.refresh_from = frozenset()
            worker._passed(received)
            return
        finally:
            ctx.refresh = frozenset()
        worker.refresh_from = frozenset()
        if pending and isinstance(res, Refreshable):
            runtime.report(Log(vid, f"would refresh (notified by {', '.join(sorted(pending))})"))
        taint = view.taint(res)
        if change is None and refresh is None:
            if taint is not None:
                self._may(worker, view, "may change", taint, notifies)
            worker._passed(received)
            return
        certain = taint is None and (change is not None or any(senders.values()))
        if not certain:
            reason = taint or "notified by a change that may happen: " + ", ".join(senders)
            if change is not None:  # what its check found, which may no longer hold then
                what = change.summary.removeprefix("would ")
                summary = what if what.startswith(("run", "may ")) else f"change: {what}"
                summary = f"may {summary}"
            else:
                summary = "may refresh"
            self._may(worker, view, summary, reason, notifies)
            worker._passed(received)
            return
        self.outcomes[vid] = (True, "")
        text = ChangeText.of(change) if change is not None else ChangeText(str(refresh))
        if secret:
            text = ChangeText(text.summary + _SECRET_NOTE, text.diff, text.members)
        runtime.report(WouldChange(vid, text, notifies))
        self._effects(worker, view, change, True)
        worker._passed(received)

    async def _check(self, res: Resource[Any], ctx: Any, view: _View) -> Change | None:
        predicted = getattr(res, "check_predicted", None)
        if predicted is None or not view.anything():
            return await res.check(ctx)
        result: Change | None = await predicted(ctx, view)
        return result

    async def _refresh(self, worker: Worker, view: _View, senders: list[str]) -> str | None:
        """What a refresh from ``senders`` would do (None: nothing): each refreshable
        member's ``predict_refresh``, or "would refresh" for a kind without one."""
        ctx = worker.ctx
        ctx.refresh = frozenset(senders)
        said = []
        for member in worker.members:
            if not isinstance(member, Refreshable):
                continue
            predict = getattr(member, "predict_refresh", None)
            summary: str | None = "would refresh" if predict is None else await predict(ctx, view)
            if summary is not None:
                said.append(summary)
        if not said:
            return None
        return f"{'; '.join(dict.fromkeys(said))} (notified by {', '.join(senders)})"

    def _may(
        self,
        worker: Worker,
        view: _View,
        summary: str,
        reason: str,
        notifies: tuple[str, ...] = (),
    ) -> None:
        vid = worker.resource.id
        self.outcomes[vid] = (False, reason)
        worker.runtime.report(MayChange(vid, summary, reason, notifies))
        self._effects(worker, view, None, False)

    def _effects(self, worker: Worker, view: _View, change: Change | None, certain: bool) -> None:
        """Remember what ``worker``'s resource would leave behind, and the refreshes."""
        vid = worker.resource.id
        for child, notify in worker.downstream:
            if notify:
                senders = self.notified.setdefault(child.resource.id, {})
                senders[vid] = senders.get(vid, False) or certain
        for member in worker.members:
            effects = self._member_effects(member, worker, view, change, certain)
            for path, node in effects.paths.items():
                if node.kind in ("file", "exists") and node.order is None and not node.keeps:
                    self._order += 1
                    node = _with(node, order=self._now + self._order)
                if not certain:
                    node = _with(node, kind="unknown")
                self.nodes[path] = _with(node, by=vid)
            for key, account in effects.accounts.items():  # a may: View.account says so
                self.accounts[key] = _with(account, by=vid)
            if effects.outputs is not None:
                self.outputs[member.id] = effects.outputs
            if effects.command:
                self._commands[vid] = (
                    "runs a command whose effect no kind describes"
                    if member.kind == "exec"
                    else f"would change what no kind describes ({member.kind} makes no prediction)"
                )

    def _member_effects(
        self,
        member: Resource[Any],
        worker: Worker,
        view: _View,
        change: Change | None,
        certain: bool,
    ) -> Effects:
        predict = getattr(member, "predict", None)
        if predict is not None and not isinstance(worker.resource, Group):
            effects: Effects = predict(worker.ctx, change if certain else None, view)
            return effects
        sends = getattr(type(member), "sends", None)
        outputs = {name: UNKNOWN for name in sends} if sends else None
        # A kind that makes no prediction: what reads the host downstream of it may change.
        return Effects(outputs=outputs, command=member.kind not in _NO_EFFECT)

    def _forget(self, worker: Worker) -> None:
        """A new pass of ``worker`` replaces what an earlier one predicted."""
        vid = worker.resource.id
        if self.outcomes.pop(vid, None) is None:
            return
        self.nodes = {p: n for p, n in self.nodes.items() if n.by != vid}
        self.accounts = {k: a for k, a in self.accounts.items() if a.by != vid}
        for senders in self.notified.values():
            senders.pop(vid, None)
        for member in worker.members:
            self.outputs.pop(member.id, None)
        self._commands.pop(vid, None)

    def _output(self, binding: Binding, real: Callable[[Binding], Any]) -> Any:
        outputs = self.outputs.get(binding.sender)
        if outputs is None:
            return real(binding)
        return outputs.get(binding.output, MISSING)


def _with(node: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(node, **changes)


class _View:
    """The prediction as one worker's resource reads it (the ``View`` protocol)."""

    __slots__ = ("_above", "_prediction", "_upstream", "_worker")

    def __init__(self, prediction: Prediction, worker: Worker) -> None:
        self._prediction = prediction
        self._worker = worker
        self._upstream: set[str] | None = None
        self._above: tuple[str, ...] | None = None

    def upstream(self) -> set[str]:
        """Every vertex upstream of this one (transitively)."""
        if self._upstream is None:
            seen: set[str] = set()
            stack = list(self._worker.upstream)
            while stack:
                up = stack.pop()
                vid = up.resource.id
                if vid not in seen:
                    seen.add(vid)
                    stack.extend(up.upstream)
            self._upstream = seen
        return self._upstream

    def anything(self) -> bool:
        """Whether anything upstream would or may change."""
        return bool(self._prediction.outcomes) and bool(self.changed_above)

    @property
    def changed_above(self) -> tuple[str, ...]:
        if self._above is None:
            outcomes = self._prediction.outcomes
            if not outcomes:
                self._above = ()
            else:
                self._above = tuple(sorted(v for v in self.upstream() if v in outcomes))
        return self._above

    def taint(self, res: Resource[Any]) -> str | None:
        """Why ``res``'s outcome is not exact: a command upstream whose effect no kind
        describes (None: there is none, or ``res`` reads nothing of the host)."""
        commands = self._prediction._commands
        if not commands or not _reads_host(res):
            return None
        found = [c for c in self.changed_above if c in commands]
        if not found:
            return None
        return "; ".join(f"upstream {c} {commands[c]}" for c in found)

    def describe(self) -> str:
        """``upstream file[/etc/y] would change`` for a reason."""
        outcomes = self._prediction.outcomes
        would = [v for v in self.changed_above if outcomes[v][0]]
        may = [v for v in self.changed_above if not outcomes[v][0]]
        parts = []
        if would:
            parts.append(f"upstream {', '.join(would)} would change")
        if may:
            parts.append(f"upstream {', '.join(may)} may change")
        return "; ".join(parts)

    # -- the View protocol --------------------------------------------------------------

    def node(self, path: str) -> Node | None:
        nodes = self._prediction.nodes
        if not nodes:
            return None
        upstream = self.upstream()
        found = nodes.get(path)
        if found is not None and found.by in upstream:
            return found
        parent = os.path.dirname(path)
        while parent != path:
            above = nodes.get(parent)
            if above is not None and above.by in upstream:
                if above.kind == "unknown":
                    return above
                if above.kind not in ("directory", "exists"):
                    return Node("absent", above.by)
            path, parent = parent, os.path.dirname(parent)
        return None

    def exists(self, path: str) -> bool:
        node = self.node(path)
        if node is None:
            try:
                os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True
        self._known(node, path)
        return node.kind != "absent"

    def mtime(self, path: str) -> int | None:
        node = self.node(path)
        if node is None or (node.keeps and node.kind != "absent"):
            try:
                return os.stat(path).st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                return None
        self._known(node, path)
        if node.kind == "absent":
            return None
        if node.order is None:
            raise Uncertain(f"{path} would be changed by {node.by} at a time not known")
        return node.order

    def content(self, path: str) -> bytes | None:
        node = self.node(path)
        if node is None or (node.keeps and node.kind == "file"):
            from convergent.resources.textfile import read

            try:
                return read(self._worker.resource.id, path)[0]
            except Exception:
                return None
        self._known(node, path)
        if node.kind == "absent":
            return None
        if node.content is None:
            raise Uncertain(f"{path} would be written by {node.by}, with content no kind describes")
        return node.content

    def new_secret(self, resource: str) -> str:
        return self._prediction.new_secret(resource)

    def is_new_secret(self, value: object) -> bool:
        return self._prediction.is_new_secret(value)

    def account(self, key: str) -> Account | None:
        found = self._prediction.accounts.get(key)
        if found is None or found.by not in self.upstream():
            return None
        if self._prediction.outcomes.get(found.by, (True, ""))[0] is False:
            raise Uncertain(f"upstream {found.by} may change the account {key}")
        return found

    @staticmethod
    def _known(node: Node, path: str) -> None:
        if node.kind == "unknown":
            raise Uncertain(f"upstream {node.by} may change {path}")


_NO_EFFECT = frozenset({"noop", "timer"})  # kinds whose change touches nothing others read


def _reads_host(res: Resource[Any]) -> bool:
    """Whether ``res``'s check reads the host (files, processes...), so that a command
    upstream may change what it finds. ``password``, ``kv`` and ``value`` read the state
    database or the world; an ``exec`` without guards reads nothing."""
    kind = res.kind
    if kind in ("password", "kv", "value", "noop"):
        return False
    if kind == "exec":
        p: Any = res.params
        guards = (p.creates, p.removes, p.ifnewer, p.onlyif, p.unless)
        return any(g is not None for g in guards)
    return True
