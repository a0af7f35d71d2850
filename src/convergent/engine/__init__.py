"""The runtime: workers, scheduling, notifications, convergence."""

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
    "WouldChange",
    "run_graph",
]
