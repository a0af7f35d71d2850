"""A receiver's side of send/recv: the received values put into its parameters before a
check, and the wait for a value of the world.

A value received from the world (``recv: {content: world[db].token}``: another host's
``value`` resource) may not exist yet. Until it does, the receiver is *waiting*: it is
not checked, it says what for (once per wait), and the graph is not converged. With
``meta: {wait_timeout: N}`` it fails after N seconds of waiting, saying which host has
not published what; when the value comes later, it is checked again. A value from a
resource of this host's graph that has none yet is only logged (its sender is upstream
and has run: nothing will come by waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from convergent.engine.meta import seconds_text
from convergent.errors import ResourceError
from convergent.resources.base import Context, Params, Resource
from convergent.resources.recv import MISSING, Binding, convert, put

__all__ = ["Receiver", "Waiting", "receive"]


class Waiting:
    """What a receiver waits for, since when, and the timer of its ``wait_timeout``."""

    __slots__ = ("since", "timer", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.since = asyncio.get_running_loop().time()
        self.timer: asyncio.TimerHandle | None = None


class Receiver(Protocol):
    """What :func:`receive` reads and sets on a worker."""

    resource: Resource[Any]
    recv: tuple[Binding, ...]
    declared: Params
    received: dict[str, Any]
    put: dict[str, Any] | None
    tried: dict[str, Any]
    waiting: Waiting | None
    ctx: Context

    def poke(self) -> None: ...
    def _log(self, message: str) -> None: ...


def _from_world(binding: Binding) -> bool:
    return binding.sender.startswith("world[")


def _world_text(bindings: Sequence[Binding]) -> str:
    parts = []
    for b in bindings:
        host = b.sender[len("world[") : -1]
        who = "no host has" if host == "*" else f"host {host} has not"
        parts.append(f"{b.source} (for {b.param}: {who} published a value '{b.output}')")
    return ", ".join(parts)


def receive(worker: Receiver, output: Any) -> Any:
    """Put the received values into the parameters; MISSING when one has none yet.

    ``output(binding)`` gives a binding's current value. Sets ``ctx.received_changed``
    and returns the values, by parameter. Raises ResourceError when a received value is
    invalid, or when the wait for a world value went past ``meta.wait_timeout``.
    """
    res = worker.resource
    raw = {b.param: output(b) for b in worker.recv}
    worker.tried = {param: value for param, value in raw.items() if value is not MISSING}
    missing = [b for b in worker.recv if raw[b.param] is MISSING]
    if missing:
        _wait(worker, [b for b in missing if _from_world(b)])
        local = [b for b in missing if not _from_world(b)]
        if local:
            what = ", ".join(f"{b.source} (for {b.param})" for b in local)
            worker._log(f"not checked: no value yet from {what}")
        return MISSING
    _wait(worker, [])
    values = {b.param: convert(res, b, raw[b.param]) for b in worker.recv}
    old = worker.received
    changed = frozenset(p for p, v in values.items() if old.get(p, MISSING) != v)
    if values != worker.put:
        worker.put = None
        put(res, worker.declared, values, worker.recv)  # ResourceError when it refuses one
        worker.put = values
    worker.ctx.received_changed = changed
    return values


def _wait(worker: Receiver, world: list[Binding]) -> None:
    """Start, go on with or end the wait for the world values ``world`` (none: end it)."""
    waiting = worker.waiting
    if not world:
        if waiting is not None:
            if waiting.timer is not None:
                waiting.timer.cancel()
            worker.waiting = None
        return
    what = _world_text(world)
    if waiting is None or waiting.what != what:
        if waiting is not None and waiting.timer is not None:
            waiting.timer.cancel()
        since = waiting.since if waiting is not None else None
        waiting = worker.waiting = Waiting(what)
        if since is not None:
            waiting.since = since
        worker._log(f"waiting for {what}")
    limit = worker.resource.meta.wait_timeout
    if limit is None:
        return
    left = waiting.since + limit - asyncio.get_running_loop().time()
    if left <= 0:
        if waiting.timer is not None:
            waiting.timer.cancel()
        worker.waiting = None
        raise ResourceError(
            worker.resource.id,
            f"waited {seconds_text(limit)} s (meta.wait_timeout) for {what}; start that "
            "host's agent with a value resource of that name, or raise wait_timeout",
        )
    if waiting.timer is None:
        waiting.timer = asyncio.get_running_loop().call_later(left, worker.poke)
