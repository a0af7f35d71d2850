"""convergent: configuration management that is parallel, event driven and distributed.

The public namespace. Names are imported on first use, so ``import convergent`` (and
``convergent --version``) stays cheap::

    from convergent import Exec, File, Graph, run

    g = Graph()
    d = g.add(File("/tmp/demo", state="directory"))
    g.add(File("/tmp/demo/f1", content="i am f1\\n"), require=[d])
    result = run(g, converged_timeout=0)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself costs ~10 ms of start-up; tools treat this as typing's

__version__ = "0.1.0"

__all__ = [
    "Change",
    "Context",
    "ConvergentError",
    "Exec",
    "File",
    "Graph",
    "Meta",
    "Noop",
    "Params",
    "PolicyError",
    "Resource",
    "RunResult",
    "__version__",
    "load_policy",
    "run",
]

_LAZY = {
    "Change": "convergent.resources.base",
    "Context": "convergent.resources.base",
    "Meta": "convergent.resources.base",
    "Params": "convergent.resources.base",
    "Resource": "convergent.resources.base",
    "File": "convergent.resources.file",
    "Exec": "convergent.resources.exec",
    "Noop": "convergent.resources.noop",
    "Graph": "convergent.graph.core",
    "RunResult": "convergent.engine.report",
    "ConvergentError": "convergent.errors",
    "PolicyError": "convergent.errors",
    "load_policy": "convergent.policy",
    "run": "convergent.api",
}

if TYPE_CHECKING:
    from convergent.api import run
    from convergent.engine.report import RunResult
    from convergent.errors import ConvergentError, PolicyError
    from convergent.graph.core import Graph
    from convergent.policy import load_policy
    from convergent.resources.base import Change, Context, Meta, Params, Resource
    from convergent.resources.exec import Exec
    from convergent.resources.file import File
    from convergent.resources.noop import Noop


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'convergent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
