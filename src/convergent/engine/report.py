"""What the engine tells the outside world: a stream of small event records.

A reporter is any callable taking one :data:`Report`; the CLI renders them, tests
collect them in a list.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from convergent.resources.base import Change

__all__ = [
    "Blocked",
    "Changed",
    "Converged",
    "Failed",
    "Log",
    "Report",
    "Reporter",
    "RunResult",
    "WouldChange",
]


class Changed(msgspec.Struct, frozen=True):
    """``resource`` changed something: ``summary`` says what (``created``, ``ran (0.01 s)``)."""

    resource: str
    summary: str
    change: Change
    seconds: float


class WouldChange(msgspec.Struct, frozen=True):
    """Under noop: ``resource`` would make ``change`` (and refresh ``refreshes``)."""

    resource: str
    change: Change | None
    refreshes: tuple[str, ...] = ()


class Failed(msgspec.Struct, frozen=True):
    """``resource`` failed with ``error`` (its check, apply or watch raised it)."""

    resource: str
    error: BaseException


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


Report = Changed | WouldChange | Failed | Blocked | Log | Converged
Reporter = Callable[[Report], None]


class RunResult(msgspec.Struct, frozen=True):
    """The outcome of one ``run``."""

    resources: int
    changed: int  # resources that changed something at least once
    failed: int  # resources failed at the end
    blocked: int  # resources not checked at the end because an upstream failed
    seconds: float
    converged: bool  # the graph was converged when the run ended
    interrupted: bool = False  # ended by stop() (SIGINT/SIGTERM), not by converged-timeout

    @property
    def exit_code(self) -> int:
        """0 when converged with no failure; 1 when a resource failed or was blocked."""
        if self.failed or self.blocked:
            return 1
        return 0 if self.converged or self.interrupted else 1

    def summary(self) -> str:
        return (
            f"resources: {self.resources}, changed: {self.changed}, failed: {self.failed}"
            + (f", blocked: {self.blocked}" if self.blocked else "")
            + f", time: {self.seconds:.2f} s"
        )
