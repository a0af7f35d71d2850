"""The control socket of a running agent, ``STATE_DIR/control.sock``, and ``convergent
status``, its client.

Every run that holds its state directory (not ``--noop``, which shares an agent's)
listens on a Unix socket in it. A client writes one request line (``status``) and reads
one JSON document back; the connection then closes. Who may ask:

- the socket is created with mode 0600 (umask 0177 around ``bind``, then ``chmod``) in
  the state directory, whose mode is 0700: another user cannot reach it at all;
- the server still checks the peer's credentials (``SO_PEERCRED``) on every connection
  and closes, without a byte, one whose uid is neither the agent's nor root's;
- a request is bounded (1 KiB, read within ``REQUEST_TIMEOUT`` seconds); nothing can be
  changed through the socket: it only reads.

The agent holds the directory's lock, so a socket file found there at start is a dead
agent's: it is replaced. A path too long for ``sun_path`` (108 bytes) is reached through
``/proc/self/fd`` of the directory.

The status says what the agent does now (the resources being checked or applied), what
it waits for (each waiting resource and the upstream ones it waits on, a retry, its
watch), what failed and why (the last error, secrets hidden), and the last events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.engine.events import Event, EventLog
    from convergent.engine.runner import Engine

__all__ = [
    "CONTROL_SOCKET",
    "REQUEST_TIMEOUT",
    "STATUS_VERSION",
    "ControlServer",
    "ask",
    "render_status",
    "status_command",
]

CONTROL_SOCKET = "control.sock"
STATUS_VERSION = 1
REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request line
_REQUEST_MAX = 1024
_RECENT = 20  # events kept for the status


def _sun_path(state_dir: str) -> tuple[str, int | None]:
    """The path to bind or connect to, and a directory descriptor to close after."""
    path = os.path.join(state_dir, CONTROL_SOCKET)
    if len(os.fsencode(path)) < 100:
        return path, None
    fd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{CONTROL_SOCKET}", fd


class ControlServer:
    """Answers ``status`` on ``STATE_DIR/control.sock`` for ``engine``."""

    def __init__(self, state_dir: str, events: EventLog, policy: str | None) -> None:
        self.state_dir = state_dir
        self.events = events
        self.policy = policy
        self.started = time.time()
        self.engine: Engine | None = None
        self.recent: deque[Event] = deque(maxlen=_RECENT)
        self.errors: dict[str, str] = {}  # resource -> its last failure (secrets hidden)
        events.listeners.append(self._saw)
        self._server: asyncio.AbstractServer | None = None

    def _saw(self, event: Event) -> None:
        self.recent.append(event)
        if event.outcome == "failed":
            self.errors[event.resource] = event.summary

    async def serve(self, engine: Engine) -> None:
        """Listen until cancelled; the socket file is removed at the end.

        The state directory is held by a descriptor from start to end: the stale socket
        is removed, the new one bound (created 0600 by the umask) and removed again
        through it, never by a path walked anew."""
        self.engine = engine
        dfd = os.open(self.state_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(CONTROL_SOCKET, dir_fd=dfd)  # a dead agent's: we hold the lock
            old = os.umask(0o177)
            try:  # no await runs under this umask: other tasks create files meanwhile
                target = f"/proc/self/fd/{dfd}/{CONTROL_SOCKET}"
                self._server = await asyncio.start_unix_server(
                    self._client, target, start_serving=False
                )
            finally:
                os.umask(old)
            await self._server.start_serving()
            try:
                await asyncio.Event().wait()
            finally:
                self._server.close()
                with contextlib.suppress(OSError):
                    os.unlink(CONTROL_SOCKET, dir_fd=dfd)
        finally:
            os.close(dfd)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            import json
            import struct

            sock = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if uid not in (0, os.geteuid()):
                return  # another user: not a byte
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await reader.readline()
            request = line[:_REQUEST_MAX].decode("utf-8", "replace").strip()
            if request == "status":
                answer: dict[str, Any] = self.status()
            else:
                answer = {"version": STATUS_VERSION, "error": f"unknown request {request!r}"}
            writer.write(json.dumps(answer, ensure_ascii=True).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def status(self) -> dict[str, Any]:
        """What the agent does now, waits for, and what failed (JSON-ready)."""
        engine = self.engine
        assert engine is not None
        states = engine.vertex_states()
        counts: dict[str, int] = {}
        for name in states.values():
            counts[name] = counts.get(name, 0) + 1
        graph = engine.graph
        waiting = []
        for vid, name in sorted(states.items()):
            if name == "waiting":
                ups = [u for u in graph.upstream(vid) if states.get(u) != "converged"]
                waiting.append({"resource": vid, "for": ups or ["its watch or a value"]})
            elif name == "retrying":
                waiting.append({"resource": vid, "for": ["a retry"]})
        failed = [
            {"resource": vid, "error": self.errors.get(vid, "its watch failed")}
            for vid, name in sorted(states.items())
            if name == "failed"
        ]
        blocked = [
            {
                "resource": vid,
                "upstream": [
                    u for u in graph.upstream(vid) if states.get(u) in ("failed", "blocked")
                ],
            }
            for vid, name in sorted(states.items())
            if name == "blocked"
        ]
        return {
            "version": STATUS_VERSION,
            "pid": os.getpid(),
            "host": self.events.host,
            "policy": self.policy,
            "started": self.started,
            "uptime": time.time() - self.started,
            "converged": engine.converged,
            "noop": engine.noop,
            "resources": len(states),
            "states": counts,
            "now": [
                {"resource": vid, "state": name}
                for vid, name in sorted(states.items())
                if name in ("checking", "applying")
            ],
            "waiting": waiting,
            "failed": failed,
            "blocked": blocked,
            "outcomes": {k.replace("-", "_"): v for k, v in self.events.counts.items()},
            "recent": [
                {
                    "time": e.time,
                    "resource": e.resource,
                    "outcome": e.outcome,
                    "summary": e.summary,
                    "cause": e.cause,
                }
                for e in self.recent
            ],
        }


def ask(state_dir: str, request: str = "status", timeout: float = REQUEST_TIMEOUT) -> Any:
    """Send ``request`` to the agent of ``state_dir``; its JSON answer.

    Raises OSError (no agent: FileNotFoundError or ConnectionRefusedError) or ValueError
    (the answer is not JSON, or the agent closed without one).
    """
    target, fd = _sun_path(state_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(target)
            sock.sendall(request.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    finally:
        if fd is not None:
            os.close(fd)
    if not data:
        raise ValueError("the agent closed the connection without an answer")
    import json

    return json.loads(data)


def render_status(status: dict[str, Any]) -> str:
    """The status for people."""
    from convergent.render import escape

    lines = []
    state = "converged" if status["converged"] else "converging"
    uptime = status["uptime"]
    lines.append(
        f"agent {status['pid']} on {escape(status['host'])}: {state}, "
        f"{status['resources']} resources, up {uptime:.0f} s"
        + (f", policy {escape(status['policy'])}" if status.get("policy") else "")
    )
    states = ", ".join(f"{n}: {c}" for n, c in sorted(status["states"].items()))
    lines.append(f"states: {states}" if states else "states: (no resources)")
    outcomes = status["outcomes"]
    lines.append(
        "since start: " + ", ".join(f"{k.replace('_', '-')}: {v}" for k, v in outcomes.items() if v)
        if any(outcomes.values())
        else "since start: nothing checked yet"
    )
    if status["now"]:
        lines.append("doing now:")
        lines.extend(f"  {escape(n['resource'])}: {n['state']}" for n in status["now"])
    if status["waiting"]:
        lines.append("waiting:")
        for w in status["waiting"]:
            lines.append(f"  {escape(w['resource'])}: for {escape(', '.join(w['for']))}")
    if status["failed"]:
        lines.append("failed:")
        for f in status["failed"]:
            lines.append(f"  {escape(f['resource'])}: {escape(f['error'])}")
    if status["blocked"]:
        lines.append("blocked:")
        for b in status["blocked"]:
            upstream = ", ".join(b["upstream"]) or "an upstream resource"
            lines.append(f"  {escape(b['resource'])}: by {escape(upstream)}")
    if not (status["now"] or status["waiting"] or status["failed"] or status["blocked"]):
        lines.append("watching for changes")
    return "\n".join(lines) + "\n"


def status_command(args: argparse.Namespace) -> int:
    """``convergent status``: 0 (converged), 1 (something failed or is not settled), 3 (no
    agent), 2 (cannot ask)."""
    import json
    import sys

    from convergent.render import say
    from convergent.state.statedir import default_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    try:
        status = ask(state_dir)
    except (FileNotFoundError, ConnectionRefusedError):
        say(f"convergent status: no agent runs on the state directory {state_dir}")
        return 3
    except PermissionError:
        say(f"convergent status: {state_dir}: permission denied (ask as the agent's user or root)")
        return 2
    except (OSError, ValueError) as exc:
        say(f"convergent status: {state_dir}: {exc}")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(status, ensure_ascii=True, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(status))
    sys.stdout.flush()
    return 0 if status.get("converged") and not status.get("failed") else 1
