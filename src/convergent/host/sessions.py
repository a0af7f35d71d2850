"""Process groups and sessions: killing a command's whole group, and starting a command
in a session of its own that outlives the agent.

- :func:`kill_group`: SIGTERM (or the signal asked for), ``GRACE`` seconds, SIGKILL, then
  a wait of at most ``KILL_WAIT`` seconds until no process of the group is left.
- :func:`spawn_detached`: a new session *without* the death signal that
  ``host.process.run`` gives, and unrecorded, so it outlives the agent (the ``process``
  kind keeps such a command running and finds it again through its own pidfile).
- :func:`group_alive`: whether a process of a group is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from convergent.host.children import DEAD, KILL_WAIT, pids, stat

if TYPE_CHECKING:
    import subprocess

__all__ = ["GRACE", "group_alive", "kill_group", "spawn_detached"]

GRACE = 1.0  # seconds between SIGTERM and SIGKILL when killing a process group
_POLL = 0.02  # seconds between checks that a killed group is gone


async def kill_group(pgid: int, grace: float = GRACE, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` (SIGTERM) to process group ``pgid``, SIGKILL what is left after
    ``grace`` seconds, then wait (at most ``KILL_WAIT`` seconds) until it is gone; True
    when it is.

    Call it while the group's leader is not reaped yet (a zombie still holds the id), so
    that the id cannot have been reused by another group.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    if await _until_gone(pgid, grace):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return await _until_gone(pgid, KILL_WAIT)


async def _until_gone(pgid: int, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def spawn_detached(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    output: int | None = None,
    user: int | None = None,
    group: int | None = None,
    groups: Sequence[int] | None = None,
    cwd_fd: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session that does not die with the agent; return it.

    Unlike :func:`run` the child gets no death signal and is not recorded for the reaper:
    it is meant to outlive the agent. stdin is /dev/null; stdout and stderr go to the
    descriptor ``output`` (/dev/null when None). ``env`` is the whole environment (None:
    the agent's). ``user``/``group``/``groups``: the uid, gid and supplementary gids to run
    as (set before exec; needs root; with a user or group and no ``groups``, none: the
    agent's own, root's, are never inherited). The caller reaps it (``Popen.poll``) once it exits.
    ``cwd_fd`` (a descriptor of ``cwd``, for a process that stays root) is entered
    instead of the name when given; else ``cwd`` is entered as the user switched to.

    Raises OSError when it cannot be started (``filename`` says what was missing).
    """
    import subprocess

    if groups is None and (user is not None or group is not None):
        groups = ()  # a switched command never keeps the agent's (root's) groups
    from convergent.host.forked import entering, not_entered

    sink = subprocess.DEVNULL if output is None else output
    switched = user is not None or group is not None
    preexec, cwd_now = entering(cwd, cwd_fd, switched, None)
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            cwd=cwd_now,
            env=env,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=list(groups) if groups is not None else None,
            preexec_fn=preexec,
        )
    except subprocess.SubprocessError:
        if cwd is not None and cwd_now is None:
            raise not_entered(cwd) from None
        raise


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` is running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for pid in pids():
        st = stat(pid)
        if st is not None and st.pgrp == pgid and st.state not in DEAD:
            return True
    return False
