"""The one exception hierarchy of convergent.

::

    ConvergentError
    ├── PolicyError          a policy could not be loaded; carries every Problem found
    ├── GraphError           the graph itself is wrong
    │   ├── CycleError       names the whole cycle: file[/a] -> exec[b] -> file[/a]
    │   └── MissingVertexError  an edge names a resource that is not in the graph
    ├── ParamError           one parameter of one resource is wrong (raised by validate())
    └── ResourceError        check/apply/watch of kind[name] failed on this host
        └── CommandError     a command exited non-zero or timed out

Two more ConvergentErrors live in the layers that raise them: ``StateError`` (``StateBusy``,
``StateDamaged``) in :mod:`convergent.state`, ``BusError`` in :mod:`convergent.host.dbus`.

Every message says what went wrong, where (``file:line:col``, ``kind[name]``) and,
when there is one, how to fix it.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "CommandError",
    "ConvergentError",
    "CycleError",
    "GraphError",
    "MissingVertexError",
    "ParamError",
    "PolicyError",
    "Problem",
    "ResourceError",
]  # and as_resource_error, the engine's helper (not a public name of the package)


class ConvergentError(Exception):
    """Base class of every error convergent raises on purpose."""


class GraphError(ConvergentError):
    """The graph is not a valid dependency graph."""


class CycleError(GraphError):
    """The graph has a cycle; ``cycle`` lists it, first vertex repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(
            f"dependency cycle: {' -> '.join(cycle)}; "
            "remove one of these require/before/notify edges"
        )


class MissingVertexError(GraphError):
    """An edge refers to a vertex that was never added."""

    def __init__(self, source: str, missing: str) -> None:
        self.source = source
        self.missing = missing
        super().__init__(f"{source}: refers to {missing}, which is not in the graph")


class ParamError(ConvergentError):
    """A parameter value is not acceptable; ``field`` names it (None: the resource as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong in a policy, with its location."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    message: str
    resource: str | None = None  # kind[name], when the problem belongs to one

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        if self.resource:
            return f"{where}: {self.resource}: {self.message}"
        return f"{where}: {self.message}"


class PolicyError(ConvergentError):
    """The policy is invalid; nothing was applied. ``problems`` lists every finding."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ResourceError(ConvergentError):
    """Checking, applying or watching a resource failed."""

    def __init__(self, resource: str, message: str) -> None:
        self.resource = resource
        self.message = message
        super().__init__(f"{resource}: {message}")


class CommandError(ResourceError):
    """A command failed: exit code (None after a timeout) and the tail of its stderr."""

    def __init__(
        self, resource: str, message: str, exit_code: int | None, stderr_tail: str = ""
    ) -> None:
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        super().__init__(resource, message)


def as_resource_error(rid: str, exc: Exception, prefix: str = "") -> ResourceError:
    """``exc`` as a ResourceError of ``rid`` (``prefix`` before its text, e.g. ``watch
    failed: ``); an OSError names its file. The original is kept as ``__cause__``."""
    if isinstance(exc, ResourceError) and not prefix:
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ResourceError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    error = ResourceError(rid, prefix + text)
    error.__cause__ = exc
    return error
