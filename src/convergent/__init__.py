"""convergent: configuration management that is parallel, event driven and distributed.

The public namespace. Names are imported on first use, so ``import convergent`` (and
``convergent --version``) stays cheap::

    from convergent import Exec, File, Graph, run

    g = Graph()
    d = g.add(File("/tmp/demo", state="directory"))
    g.add(File("/tmp/demo/f1", content="i am f1\\n"), require=[d])
    result = run(g, converged_timeout=0)

Running a graph:

- ``run``: converge a graph on this host and return its ``RunResult``.
- ``arun``: the same, awaited in a running event loop.
- ``load_policy``: the graph of a YAML (or mgmt yamlgraph) policy file.
- ``Graph``: resources and the edges between them (``require``, ``notify``, ``recv``).
- ``Engine``: runs a graph; ``run``/``arun`` make one. Keep it to ``stop()`` it or
  ``swap()`` in a new graph while it runs.

The kinds (one class each; ``File("/etc/motd", content="hi\\n")``):

- ``File``: a file, directory or symlink: content, mode, owner, group, absence.
- ``Exec``: a command, run when it is needed (``creates``, ``onlyif``, ``ifnewer``, refresh).
- ``Noop``: does nothing; a point to order and notify through.
- ``Password``: a generated secret kept in the state database; sends it to others.
- ``Kv``: a key/value on the world, kept in this host's state database; sends it on.
- ``Timer``: ticks every ``interval`` seconds and refreshes what it notifies.
- ``Process``: a command kept running; it outlives the agent, the next one finds it again.
- ``Svc``: a systemd unit running or stopped, enabled or disabled, over systemd's D-Bus API.
- ``User``: a local user account (uid, groups, shell, password hash...), or its absence.
- ``Group``: a local group (gid), or its absence.
- ``Line``: one line in a text file (replaced, inserted or removed), the rest left as is.
- ``Cron``: a scheduled command, as a root-owned file in ``/etc/cron.d``.
- ``Download``: a file fetched over HTTP(S), verified by its SHA-256 before it is used.
- ``Pkg``: a package installed, absent, latest or pinned, through apt or PackageKit.
- ``Value``: a named value published for every host (received as ``world[HOST].NAME``).

What a run reports (a reporter is any callable taking one ``Report``):

- ``Changed``: a resource changed something.
- ``WouldChange``: under noop, what a resource would change, as a ``ChangeText``
  (summary, diff, members: a ``Change`` as plain data).
- ``Failed``: a resource failed, and its error.
- ``Blocked``: a resource was not checked because one it depends on failed.
- ``Log``: a line a resource says while it works (a command's output).
- ``MayChange``: under noop, a resource that may change, and why exactness is impossible.
- ``Converged``: every resource is settled and nothing is running.
- ``Report``: any of the seven above; ``Reporter``: a callable that takes one.
- ``VertexState``: a vertex's new state, for an observer that follows a running
  ``Engine`` (``follow_states``); ``VERTEX_STATES`` names the states.
- ``RunResult``: the outcome of a run: counts, time, ``exit_code``, ``summary()``.
- ``TextRenderer``: the default reporter, one line per report, control characters
  escaped.

The errors (every one a ``ConvergentError``):

- ``ConvergentError``: the base of every error convergent raises on purpose.
- ``PolicyError``: a policy could not be loaded; ``problems`` lists every ``Problem``.
- ``Problem``: one thing wrong in a policy, with its ``file:line:col``.
- ``GraphError``: the graph itself is wrong; ``CycleError`` names the whole cycle,
  ``MissingVertexError`` an edge to a resource that is not in the graph.
- ``ParamError``: one parameter of one resource is wrong.
- ``ResourceError``: checking, applying or watching ``kind[name]`` failed on this host;
  ``CommandError``: a command exited non-zero or timed out.

Writing a kind (the contract is in docs/architecture.md):

- ``Resource``: the base class; ``Params``: its parameters; ``Meta``: the meta parameters
  the engine applies to every kind; ``Change``: what ``check`` found; ``Context``: what
  the engine hands to ``watch``, ``check`` and ``apply``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~10 ms of start-up; tools treat this as typing's

__version__ = "0.1.0"

__all__ = [
    "VERTEX_STATES",
    "Blocked",
    "Change",
    "ChangeText",
    "Changed",
    "CommandError",
    "Context",
    "Converged",
    "ConvergentError",
    "Cron",
    "CycleError",
    "Download",
    "Engine",
    "Exec",
    "Failed",
    "File",
    "Graph",
    "GraphError",
    "Group",
    "Kv",
    "Line",
    "Log",
    "MayChange",
    "Meta",
    "MissingVertexError",
    "Noop",
    "ParamError",
    "Params",
    "Password",
    "Pkg",
    "PolicyError",
    "Problem",
    "Process",
    "Report",
    "Reporter",
    "Resource",
    "ResourceError",
    "RunResult",
    "Svc",
    "TextRenderer",
    "Timer",
    "User",
    "Value",
    "VertexState",
    "WouldChange",
    "__version__",
    "arun",
    "load_policy",
    "run",
]

# name -> the module it is imported from on first use (kept equal to the block below)
_LAZY = {
    "arun": "convergent.api",
    "run": "convergent.api",
    "Blocked": "convergent.engine.report",
    "ChangeText": "convergent.engine.report",
    "Changed": "convergent.engine.report",
    "Converged": "convergent.engine.report",
    "Failed": "convergent.engine.report",
    "Log": "convergent.engine.report",
    "MayChange": "convergent.engine.report",
    "Report": "convergent.engine.report",
    "Reporter": "convergent.engine.report",
    "RunResult": "convergent.engine.report",
    "WouldChange": "convergent.engine.report",
    "VERTEX_STATES": "convergent.engine.report",
    "VertexState": "convergent.engine.report",
    "Engine": "convergent.engine.runner",
    "CommandError": "convergent.errors",
    "ConvergentError": "convergent.errors",
    "CycleError": "convergent.errors",
    "GraphError": "convergent.errors",
    "MissingVertexError": "convergent.errors",
    "ParamError": "convergent.errors",
    "PolicyError": "convergent.errors",
    "Problem": "convergent.errors",
    "ResourceError": "convergent.errors",
    "Graph": "convergent.graph.core",
    "load_policy": "convergent.policy",
    "TextRenderer": "convergent.render",
    "Change": "convergent.resources.base",
    "Context": "convergent.resources.base",
    "Meta": "convergent.resources.base",
    "Params": "convergent.resources.base",
    "Resource": "convergent.resources.base",
    "Cron": "convergent.resources.cron",
    "Download": "convergent.resources.download",
    "Exec": "convergent.resources.exec",
    "File": "convergent.resources.file",
    "Kv": "convergent.resources.kv",
    "Line": "convergent.resources.line",
    "Noop": "convergent.resources.noop",
    "Password": "convergent.resources.password",
    "Process": "convergent.resources.process",
    "Svc": "convergent.resources.svc",
    "Pkg": "convergent.resources.pkg",
    "Timer": "convergent.resources.timer",
    "User": "convergent.resources.user",
    "Group": "convergent.resources.groupacct",
    "Value": "convergent.resources.value",
}

if TYPE_CHECKING:
    from convergent.api import arun, run
    from convergent.engine.report import (
        VERTEX_STATES,
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
    from convergent.engine.runner import Engine
    from convergent.errors import (
        CommandError,
        ConvergentError,
        CycleError,
        GraphError,
        MissingVertexError,
        ParamError,
        PolicyError,
        Problem,
        ResourceError,
    )
    from convergent.graph.core import Graph
    from convergent.policy import load_policy
    from convergent.render import TextRenderer
    from convergent.resources.base import Change, Context, Meta, Params, Resource
    from convergent.resources.cron import Cron
    from convergent.resources.download import Download
    from convergent.resources.exec import Exec
    from convergent.resources.file import File
    from convergent.resources.groupacct import Group
    from convergent.resources.kv import Kv
    from convergent.resources.line import Line
    from convergent.resources.noop import Noop
    from convergent.resources.password import Password
    from convergent.resources.pkg import Pkg
    from convergent.resources.process import Process
    from convergent.resources.svc import Svc
    from convergent.resources.timer import Timer
    from convergent.resources.user import User
    from convergent.resources.value import Value


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'convergent' has no attribute {name!r}")
    import sys

    __import__(module)  # not through importlib (cli/lazystd.py, _real: a thread's first)
    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
