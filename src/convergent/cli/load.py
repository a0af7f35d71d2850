"""Loading a policy for a command: every problem goes to stderr, the caller gets a graph or None;
and what a run's file and options say of where it runs (``remote_key``, ``CLUSTER_OPTIONS``),
read by ``cli/run.py`` and ``cli/remote.py`` alike."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from convergent.errors import ConvergentError, PolicyError
from convergent.render import say

if TYPE_CHECKING:
    from convergent.graph.core import Graph
    from convergent.policy.cache import PolicyCache
    from convergent.policy.vars import Inputs
    from convergent.resources.base import Resource
    from convergent.state.statedir import StateDir

__all__ = ["CLUSTER_OPTIONS", "load_graph", "remote_key", "settle"]

#: The options that put a run in a cluster (cli/cluster.py reads them); without any of
#: them the run is this host's alone and imports nothing of the cluster's. A remote run
#: makes its own world and refuses them.
CLUSTER_OPTIONS = (
    "cluster",
    "initial_cluster",
    "seeds",
    "etcd_endpoints",
    "client_urls",
    "peer_urls",
    "insecure",
    "join_token",
)


def _say(message: str) -> None:
    say(message)  # escaped: a policy's names and values cannot forge a line


#: The inputs each file was first loaded with: a reload (``run`` follows the file) takes
#: the same ``--set``, ``--class``... as the first load.
_INPUTS: dict[str, Inputs | None] = {}


def load_graph(
    file: str, inputs: Inputs | None = None, cache: PolicyCache | None = None
) -> Graph[Resource[Any]] | None:
    """Load and validate the policy ``file`` (``inputs``: ``--set``, ``--class``...;
    None: those ``file`` was loaded with before, if it was; ``cache``: where a plain
    policy's graph is kept between runs, ``convergent run``'s).

    Returns None after printing what is wrong (every problem with its ``file:line:col``,
    or why the file could not be read) to stderr.
    """
    from convergent.policy import load_policy

    if inputs is None:
        inputs = _INPUTS.get(file)
    else:
        _INPUTS.setdefault(file, inputs)

    if not os.path.lexists(file):
        _say(f"convergent: {file}: no such file; check the path of the policy")
        return None
    try:
        graph = load_policy(file, inputs=inputs, cache=cache)
        graph.validate()
    except PolicyError as exc:
        for line in [str(problem) for problem in exc.problems] or [str(exc)]:
            _say(line)
        return None
    except ConvergentError as exc:
        _say(f"{file}: {exc}")
        return None
    except FileNotFoundError:
        _say(f"convergent: {file}: no such file; check the path of the policy")
        return None
    except IsADirectoryError:
        _say(f"convergent: {file}: is a directory; give the path of a policy file")
        return None
    except OSError as exc:
        _say(f"convergent: cannot read {file}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        _say(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")
        return None
    return graph


def remote_key(path: str) -> str | None:
    """The URL of the policy's top-level ``remote:`` (an mgmt graph that names the host
    it is for), or None: such a file goes to that host (``cli/remote.py``)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    if "remote:" not in text:
        return None
    for line in text.split("\n"):
        if line.startswith("remote:"):
            value = line[len("remote:") :].split(" #", 1)[0].strip().strip("'\"")
            return value or None
    return None


def settle(
    cache: PolicyCache,
    opened: StateDir,
    file: str,
    inputs: Inputs | None,
    graph: Graph[Resource[Any]],
) -> Graph[Resource[Any]] | None:
    """The graph a run goes on with, once its state directory is ``opened`` (locked):
    ``graph``, unless ``cache`` gave it from another directory than the one locked (then
    ``file`` read again: None, its problems said, when it no longer loads); a graph read
    is then kept in the locked directory."""
    try:
        directory = opened.directory()
    except (OSError, ConvergentError):  # the path no longer leads to it: neither used nor kept
        return load_graph(file, inputs) if cache.used else graph
    try:
        if not cache.confirm(directory):
            return load_graph(file, inputs)
        cache.save(directory)
    finally:
        os.close(directory)
    return graph
