"""The runtime: workers, scheduling, notifications, send/recv, convergence, changeover."""

from convergent.engine.changeover import Swapped
from convergent.engine.report import (
    Blocked,
    Changed,
    ChangeText,
    Converged,
    Failed,
    Log,
    MayChange,
    Report,
    Reporter,
    RunResult,
    VertexState,
    WouldChange,
)
from convergent.engine.rungraph import run_graph
from convergent.engine.runner import Engine

__all__ = [
    "Blocked",
    "ChangeText",
    "Changed",
    "Converged",
    "Engine",
    "Failed",
    "Log",
    "MayChange",
    "Report",
    "Reporter",
    "RunResult",
    "Swapped",
    "VertexState",
    "WouldChange",
    "run_graph",
]
