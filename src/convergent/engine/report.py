"""What the engine tells the outside world: a stream of small event records.

A reporter is any callable taking one :data:`Report`; the CLI renders them, tests
collect them in a list. Every record is plain data: ``msgspec.json.encode(report)``
takes any of them as it is (no ``enc_hook``), so a remote agent or a web view can
stream them.

Two records also carry, for a reporter in the same process, the object they were made
from, which is not part of the encoded form:

- :class:`Changed` keeps the resource's :class:`Change` (``report.change``; a file's
  computes its diff only when read). The encoded record has the summary and, for a
  group, each member's summary, but no diff: a run that changes 1,000 files would
  otherwise compute (and import ``difflib`` for) 1,000 diffs nobody shows.
  ``Changed.of(resource, summary, change, seconds)`` makes one.
- :class:`Failed` keeps the exception (``report.error``); the encoded record has its
  text, and a failed command's exit code and stderr tail. ``Failed.of(resource, error)``
  makes one.

:class:`WouldChange` (noop) holds the change as data, :class:`ChangeText`, diff
included: a noop run shows every diff anyway. Built from a :class:`Change`, it converts
it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from convergent.errors import CommandError, ResourceError
from convergent.resources.base import Change

__all__ = [
    "VERTEX_STATES",
    "Blocked",
    "ChangeText",
    "Changed",
    "Converged",
    "Failed",
    "Log",
    "MayChange",
    "Report",
    "Reporter",
    "RunResult",
    "VertexState",
    "WouldChange",
]


class ChangeText(msgspec.Struct, frozen=True):
    """A :class:`Change` as data: its summary, its diff, its members' (for a group)."""

    summary: str
    diff: str | None = None
    members: dict[str, ChangeText] | None = None

    @classmethod
    def of(cls, change: Change) -> ChangeText:
        """``change`` as data (its diff is read, and so computed, here)."""
        if isinstance(change, ChangeText):
            return change
        members = None
        if change.members is not None:
            members = {m: cls.of(c) for m, c in change.members.items()}
        return cls(change.summary, change.diff, members)


class Changed(msgspec.Struct, frozen=True, dict=True):
    """``resource`` changed something: ``summary`` says what (``created``, ``ran (0.01 s)``).

    ``members``: for a group, each member's summary. ``change`` (not encoded): the Change.
    """

    resource: str
    summary: str
    seconds: float
    members: dict[str, str] | None = None

    @classmethod
    def of(cls, resource: str, summary: str, change: Change, seconds: float) -> Changed:
        members = None
        if change.members is not None:
            members = {m: c.summary for m, c in change.members.items()}
        report = cls(resource, summary, seconds, members)
        report.__dict__["_change"] = change
        return report

    @property
    def change(self) -> Change:
        """The Change that was made (in process only; rebuilt from the summaries when the
        record was decoded)."""
        change: Change | None = self.__dict__.get("_change")
        if change is None:
            members = None
            if self.members is not None:
                members = {m: Change(summary) for m, summary in self.members.items()}
            change = Change(self.summary, None, members)
        return change


class WouldChange(msgspec.Struct, frozen=True):
    """Under noop: ``resource`` would make ``change`` (and refresh ``refreshes``).

    Made with a :class:`Change`, it keeps it as :class:`ChangeText`.
    """

    resource: str
    change: ChangeText | None
    refreshes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        change: Any = self.change
        if change is not None and not isinstance(change, ChangeText):
            msgspec.structs.force_setattr(self, "change", ChangeText.of(change))


class Failed(msgspec.Struct, frozen=True, dict=True):
    """``resource`` failed: ``message`` says why (``kind[name]: what``); a command's
    failure adds its ``exit_code`` (None after a timeout) and ``stderr_tail``.

    ``error`` (not encoded): the exception.
    """

    resource: str
    message: str
    exit_code: int | None = None
    stderr_tail: str = ""
    command: bool = False  # a command failed (exit_code and stderr_tail are its own)

    @classmethod
    def of(cls, resource: str, error: BaseException) -> Failed:
        if isinstance(error, CommandError):
            report = cls(resource, str(error), error.exit_code, error.stderr_tail, True)
        else:
            report = cls(resource, str(error) or type(error).__name__)
        report.__dict__["_error"] = error
        return report

    @property
    def error(self) -> BaseException:
        """The exception (in process only; rebuilt from the text when decoded)."""
        error: BaseException | None = self.__dict__.get("_error")
        if error is None:
            prefix = f"{self.resource}: "
            text = self.message.removeprefix(prefix)
            if self.command:
                error = CommandError(self.resource, text, self.exit_code, self.stderr_tail)
            else:
                error = ResourceError(self.resource, text)
        return error


class Blocked(msgspec.Struct, frozen=True):
    """``resource`` is not checked because ``upstream`` failed."""

    resource: str
    upstream: str


class Log(msgspec.Struct, frozen=True):
    """A line ``resource`` says while it works (a command's output line, a refresh)."""

    resource: str
    message: str


class Converged(msgspec.Struct, frozen=True):
    """Every resource is settled (clean, failed or blocked) and nothing is running."""

    failed: int
    blocked: int


class MayChange(msgspec.Struct, frozen=True):
    """Under noop: ``resource`` *may* change; exactness is impossible, ``reason`` says why.

    ``summary`` is what it may do (``may run``, ``may change``); ``reason``: ``its guard
    runs a command; upstream file[/etc/y] would change``. Counted apart from
    :class:`WouldChange`: never silently dropped, never silently promised.
    """

    resource: str
    summary: str
    reason: str
    refreshes: tuple[str, ...] = ()


Report = Changed | WouldChange | Failed | Blocked | Log | Converged | MayChange
Reporter = Callable[[Report], None]

#: What :class:`VertexState` says, in the order a vertex usually goes through them.
#: ``checking``: in check (or receiving its values); ``applying``: in apply or refresh;
#: ``converged``: checked clean; ``retrying``: a try (or its watch) failed, the retry
#: delay runs; ``blocked``: an upstream failed; ``removed``: gone with a new graph.
VERTEX_STATES = (
    "waiting",
    "checking",
    "applying",
    "converged",
    "retrying",
    "failed",
    "blocked",
    "removed",
)


class VertexState(msgspec.Struct, frozen=True):
    """Vertex ``resource`` (a resource or a group, ``kind[name]``) is now in ``state``
    (one of :data:`VERTEX_STATES`).

    Not a :data:`Report`: the engine makes these only for the observers of
    ``Engine.follow_states`` (a web view, a status or progress display), and a run
    nobody follows makes none.
    """

    resource: str
    state: str


class RunResult(msgspec.Struct, frozen=True):
    """The outcome of one ``run``."""

    resources: int
    changed: int  # resources that changed something at least once
    failed: int  # resources failed at the end
    blocked: int  # resources not checked at the end because an upstream failed
    seconds: float
    converged: bool  # the graph was converged when the run ended
    interrupted: bool = False  # ended by stop() (SIGINT/SIGTERM), not by converged-timeout
    repairs: int = 0  # changes made (a resource repaired 20 times counts 20)
    retrying: int = 0  # resources whose last try failed, stopped while waiting to retry

    @property
    def exit_code(self) -> int:
        """0 when converged with no failure; 1 when a resource failed or was blocked, or
        the run was stopped while a resource waited to retry a failed try."""
        if self.failed or self.blocked or self.retrying:
            return 1
        return 0 if self.converged or self.interrupted else 1

    def summary(self) -> str:
        """``resources: 5, repaired: 20 (2 resources), failed: 0, time: 0.01 s``."""
        repaired = f"{self.repairs}"
        if self.repairs:
            repaired += f" ({self.changed} resource{'' if self.changed == 1 else 's'})"
        return (
            f"resources: {self.resources}, repaired: {repaired}, failed: {self.failed}"
            + (f", blocked: {self.blocked}" if self.blocked else "")
            + (f", retrying: {self.retrying}" if self.retrying else "")
            + f", time: {self.seconds:.2f} s"
        )
