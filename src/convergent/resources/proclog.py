"""The keepers of ``process`` logs as the agent holds them while it runs.

Each ``process`` resource's output goes to a pipe read by its log's keeper
(:mod:`convergent.host.logkeeper`, started by :meth:`procfiles.Store.keep_log`). While an
agent runs it holds a writing end of that pipe (:data:`_KEEPERS`, by resource), so that
a restart's process writes to the same keeper: no interpreter is started per restart.

- :func:`output_for` gives a start a writing end of its own (a new open file
  description of the pipe, through ``/proc/self/fd``: a process that makes its stdout
  non-blocking changes no later process's), starting a keeper when there is none or
  the one held has ended.
- :func:`release` lets go of a resource's keeper when its process is stopped for good
  or the resource is no longer watched (the end of a run, a swap): the keeper then ends
  when the process does, and a thread of its own reaps it (the run's event loop may be
  closed by then).
- A keeper that ends while it is held (killed, out of memory) is reaped on the event
  loop and marked :attr:`Keeper.lost`; the resource is told (``notify``), and its check
  restarts the process, whose output had nowhere to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from convergent.resources.procfiles import Store

__all__ = ["Keeper", "output_for", "release"]


class Keeper:
    """A log's keeper this agent started and holds: its PID, the pidfd that says when it
    ended (-1 once reaped), the writing end of its pipe (-1 once let go of), and whether
    it ended while held (``lost``)."""

    __slots__ = ("lost", "notify", "pid", "pidfd", "pipe")

    def __init__(self, pid: int, pidfd: int, pipe: int, notify: Callable[[], None]) -> None:
        self.pid, self.pidfd, self.pipe, self.notify = pid, pidfd, pipe, notify
        self.lost = False


_KEEPERS: dict[str, Keeper] = {}


def output_for(rid: str, store: Store, notify: Callable[[], None]) -> tuple[int, Keeper]:
    """A writing end of the pipe to the keeper of ``rid``'s log, of the caller's (to
    close once the process has it), and that keeper; a keeper is started (and held) when
    none is, or the one held has ended. ``notify`` is called if the keeper ends while
    held. Raises OSError when no keeper can be started."""
    keeper = _KEEPERS.get(rid)
    if keeper is not None and _ended(keeper.pidfd):
        _gone(rid, keeper)  # its reaping was still to run
        keeper = None
    if keeper is None:
        keeper = _start(rid, store, notify)
    try:
        fd = os.open(f"/proc/self/fd/{keeper.pipe}", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:  # no /proc: the held description itself, blocking as a start expects
        fd = os.dup(keeper.pipe)
        os.set_blocking(fd, True)
    return fd, keeper


def release(rid: str) -> None:
    """Let go of the keeper of ``rid``'s log: it ends when the process does, and is
    reaped then by a thread of its own."""
    keeper = _KEEPERS.pop(rid, None)
    if keeper is None:
        return
    os.close(keeper.pipe)
    keeper.pipe = -1
    if keeper.pidfd < 0:
        return
    with contextlib.suppress(RuntimeError):  # no running loop: no reader was added
        asyncio.get_running_loop().remove_reader(keeper.pidfd)
    import threading

    pid, pidfd = keeper.pid, keeper.pidfd
    keeper.pidfd = -1
    threading.Thread(
        target=_reap, args=(pid, pidfd), name=f"reap log keeper {pid}", daemon=True
    ).start()


def _start(rid: str, store: Store, notify: Callable[[], None]) -> Keeper:
    pipe, pid = store.keep_log(rid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        os.close(pipe)
        raise
    keeper = _KEEPERS[rid] = Keeper(pid, pidfd, pipe, notify)
    asyncio.get_running_loop().add_reader(pidfd, _gone, rid, keeper)
    return keeper


def _gone(rid: str, keeper: Keeper) -> None:
    """``keeper`` has ended while held: reap it, let go of it, tell its resource."""
    if keeper.pidfd < 0:
        return
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().remove_reader(keeper.pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(keeper.pid, os.WNOHANG)
    os.close(keeper.pidfd)
    keeper.pidfd = -1
    if _KEEPERS.get(rid) is keeper:
        del _KEEPERS[rid]
    if keeper.pipe >= 0:
        os.close(keeper.pipe)
        keeper.pipe = -1
        keeper.lost = True
        keeper.notify()


def _ended(pidfd: int) -> bool:
    poller = select.poll()  # not select(): descriptors past 1,024 are common in agents
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _reap(pid: int, pidfd: int) -> None:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
