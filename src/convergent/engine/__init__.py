"""The runtime: workers, scheduling, notifications, send/recv, convergence, changeover."""

from convergent.engine.changeover import Swapped
from convergent.engine.report import (
    Blocked,
    Changed,
    Converged,
    Failed,
    Log,
    Report,
    Reporter,
    RunResult,
    WouldChange,
)
from convergent.engine.runner import Engine, run_graph

__all__ = [
    "Blocked",
    "Changed",
    "Converged",
    "Engine",
    "Failed",
    "Log",
    "Report",
    "Reporter",
    "RunResult",
    "Swapped",
    "WouldChange",
    "run_graph",
]
