"""Hierarchical fan-out: a first-level host bootstraps the hosts behind it.

``--remote-depth 2`` or ``URL via:URL`` puts hosts behind a first-level host. The
initiator bootstraps the first-level host as any other, and writes there, in the same
round trip (under ``hosts/NAME/relay/``): the plan (:data:`PLAN`: the single file's
digest, the world's port on that host, a join token and a policy file per host behind
it), the initiator's known_hosts lines for those hosts (:data:`KNOWN`) and their
policies. Then it starts the *relay* on that connection, from the single file the host
has (:func:`relay_argv`: ``convergent run relay/plan.json --relay --remote URL...``),
with the initiator's ssh agent forwarded to it: the relay is a ``run --remote`` of its
own that copies the single file and the policies onward, starts the agents behind it,
reverse-forwards their world to the port that leads back to the initiator's member, and
writes every line of theirs up as JSON (:func:`line`, :func:`result`), which the
initiator prints prefixed by host (:func:`read`) as it does its own hosts' lines.

So the single file crosses the initiator's link once per first-level host, and the
initiator holds one connection per first-level host. The relay stops when its standard
input ends (the initiator closed it, or the connection is gone).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from convergent.remote.urls import Target

__all__ = [
    "KNOWN",
    "PLAN",
    "End",
    "Plan",
    "Upstream",
    "child_policy",
    "decode",
    "line",
    "no_agent",
    "plan_files",
    "read_plan",
    "relay_argv",
    "result",
]

PLAN = "relay/plan.json"  # under hosts/NAME/ on the first-level host
KNOWN = "relay/known_hosts"


@dataclass(frozen=True)
class Plan:
    """What the initiator tells a relay: who it is (``origin``), the single file's
    ``digest``, the world's port on its loopback (None: no world), and for each host
    behind it a join token and a policy file (relative to ``hosts/ORIGIN``)."""

    origin: str
    digest: str
    world_port: int | None
    tokens: dict[str, str]
    policies: dict[str, str]


def child_policy(name: str, policy: str) -> str:
    """Where host ``name``'s policy goes on the relay's host (under ``hosts/ORIGIN/``)."""
    return f"relay/{name}/{os.path.basename(policy)}"


def plan_files(plan: Plan, policies: dict[str, str], known: str) -> dict[str, str]:
    """The files the initiator writes on the relay's host: the plan, ``known`` (the
    known_hosts lines for the hosts behind it) and their policies (path -> text)."""
    data = {
        "origin": plan.origin,
        "digest": plan.digest,
        "world_port": plan.world_port,
        "tokens": plan.tokens,
        "policies": plan.policies,
    }
    return {PLAN: json.dumps(data), KNOWN: known, **policies}


def read_plan(path: str) -> Plan:
    """The plan at ``path``; ValueError or OSError when it cannot be read."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    port = data["world_port"]
    return Plan(
        str(data["origin"]),
        str(data["digest"]),
        None if port is None else int(port),
        {str(k): str(v) for k, v in data["tokens"].items()},
        {str(k): str(v) for k, v in data["policies"].items()},
    )


def relay_argv(
    children: list[Target],
    *,
    cconns: int,
    caching: bool,
    accept_new: bool,
    converged_timeout: float | None,
    detach: bool,
    agent_args: tuple[str, ...],
) -> list[str]:
    """The relay's command line (its ``convergent`` arguments): nothing secret."""
    argv = ["run", PLAN, "--relay", "--cconns", str(cconns)]
    for child in children:
        argv += ["--remote", f"{child.url}#{child.name}"]
    if not caching:
        argv.append("--no-caching")
    if accept_new:
        argv.append("--accept-new-host-keys")
    if converged_timeout is not None:
        argv += ["--converged-timeout", f"{converged_timeout:g}"]
    if detach:
        argv.append("--detach")
    return argv + list(agent_args)


def no_agent(child: str, origin: str) -> str:
    """The error of a host behind ``origin`` when no ssh agent reached ``origin``."""
    return (
        f"{child}: {origin} cannot log in to it: no ssh agent was forwarded to {origin} "
        f"(its sshd refuses agent forwarding: set AllowAgentForwarding yes in {origin}'s "
        "sshd_config, or reach the host directly)"
    )


def line(host: str, text: str, error: bool) -> str:
    """One report line of a host behind the relay, as the relay writes it up."""
    return json.dumps({"host": host, "line": text, "error": error})


def result(
    host: str, status: int | None, error: str | None, copied: int, detached: int | None
) -> str:
    """How a host behind the relay ended, as the relay writes it up."""
    return json.dumps(
        {
            "host": host,
            "end": {"status": status, "error": error, "copied": copied, "detached": detached},
        }
    )


End = tuple[int | None, str | None, int, int | None]  # status, error, copied, detached PID


def decode(text: str) -> tuple[str, str, bool] | tuple[str, End] | None:
    """A relay's line: ``(host, line, error)``, ``(host, (status, error, copied,
    detached))``, or None when it is not one (the relay's own output: a traceback)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str):
        return None
    end = data.get("end")
    if isinstance(end, dict):
        error = end.get("error")
        return data["host"], (
            _int(end.get("status")),
            None if error is None else str(error),
            _int(end.get("copied")) or 0,
            _int(end.get("detached")),
        )
    if isinstance(data.get("line"), str):
        return data["host"], data["line"], bool(data.get("error"))
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Upstream:
    """The world as a relay reaches it: ``port`` on this host's loopback, forwarded by
    the initiator to its member; the join tokens it made for the hosts behind."""

    def __init__(self, port: int, tokens: dict[str, str]) -> None:
        self.port = port
        self._tokens = tokens

    async def start(self, hosts: list[str]) -> dict[str, str]:
        return {h: self._tokens[h] for h in hosts if h in self._tokens}

    async def aclose(self) -> None:
        return None
