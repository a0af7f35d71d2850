"""Send/recv between running workers, and the secrets the values carry.

The checks of a ``recv`` pair are pure and live in :mod:`convergent.resources.recv`; this
is their run-time side. After every pass of a sender the engine compares its outputs with
what each receiver last tried to receive and pokes those whose value changed; the values
of secret outputs are remembered (with every secret stored in the state database, known
from the start) and hidden from every report (:mod:`convergent.engine.redact`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from convergent.engine.redact import Secrets, hide_report
from convergent.engine.report import Report
from convergent.engine.vertexmap import MemberView
from convergent.resources.recv import MISSING, Binding, sends

if TYPE_CHECKING:
    from convergent.engine.changeover import Plan
    from convergent.engine.worker import Worker
    from convergent.resources.base import Resource

__all__ = ["Exchange"]


class Exchange:
    """Who receives what from whom in the running plan, and every secret seen."""

    __slots__ = ("_held", "_policy_held", "_receivers", "members", "secrets")

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.secrets = Secrets()
        self.secrets.update(known)
        self.members: Mapping[str, Resource[Any]] = {}  # member id -> running resource
        self._receivers: dict[str, list[tuple[Worker, Binding]]] = {}  # by sender member
        self._held: dict[str, tuple[str, ...]] = {}  # receiver -> params holding a secret
        self._policy_held: dict[str, tuple[str, ...]] = {}  # the same, given by the policy

    def policy(self, secrets: Iterable[str], held: Mapping[str, tuple[str, ...]]) -> None:
        """The secrets a policy was given (vars) and the parameters holding them, by vertex;
        called before :meth:`wire` with each new graph."""
        self.secrets.update(secrets)
        self._policy_held = dict(held)

    def wire(self, plan: Plan, workers: Mapping[str, Worker]) -> None:
        """Take the bindings of ``plan``, whose vertices ``workers`` run."""
        self.members = MemberView(workers)
        self._receivers = {}
        self._held = {}
        for receiver, pairs in plan.bindings.items():
            worker = workers[plan.vertex_of[receiver]]
            for binding in pairs:
                self._receivers.setdefault(binding.sender, []).append((worker, binding))
            secret = tuple(b.param for b in pairs if b.secret)
            if secret:
                self._held[receiver] = secret
        for holder, params in self._policy_held.items():
            self._held[holder] = tuple(sorted({*self._held.get(holder, ()), *params}))

    def output(self, binding: Binding) -> Any:
        """The current value of ``binding``'s output (MISSING when the sender has none)."""
        sender = self.members.get(binding.sender)
        if sender is None:
            return MISSING
        outputs = sender.outputs() if hasattr(sender, "outputs") else {}
        return outputs.get(binding.output, MISSING)

    def sent(self, worker: Worker) -> None:
        """After a pass of a sender: remember secret values, poke the receivers whose value
        differs from the one they last tried."""
        for member in worker.members:
            declared = sends(member)
            if not declared:
                continue
            outputs = member.outputs()  # type: ignore[attr-defined]
            for name, output in declared.items():
                if output.secret and name in outputs:
                    self.secrets.add(outputs[name])
            for receiver, binding in self._receivers.get(member.id, ()):
                value = outputs.get(binding.output, MISSING)
                if value != receiver.tried.get(binding.param, MISSING):
                    receiver.poke()

    def hide(self, report: Report) -> Report:
        """``report`` with every known secret hidden."""
        if self.secrets:
            return hide_report(report, self.secrets, self._held)
        return report
