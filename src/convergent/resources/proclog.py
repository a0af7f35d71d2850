"""The keepers of ``process`` logs as the agent holds them while it runs.

Each ``process`` resource's output goes to a pipe read by its log's keeper
(:mod:`convergent.host.logkeeper`, started by :meth:`procfiles.Store.keep_log`). While a
run goes on it holds a writing end of that pipe (:class:`Keepers`, one per run through
``ctx.shared``, by resource), so that a restart's process writes to the same keeper: no
interpreter is started per restart.

- :meth:`Keepers.output_for` gives a start a writing end of its own (a new open file
  description of the pipe, through ``/proc/self/fd``: a process that makes its stdout
  non-blocking changes no later process's), starting a keeper when there is none or
  the one held has ended.
- :meth:`Keepers.release` lets go of a resource's keeper when its process is stopped for
  good or the resource is no longer watched (a swap); :meth:`Keepers.close`, at the end
  of the run, of every one (a ``process`` polled with ``meta.poll`` is never
  subscribed, so never unsubscribed). A keeper let go of ends when its process does,
  and a thread of its own reaps it then (the run's event loop may be closed by then).
- A keeper that ends while it is held (killed, out of memory) is reaped on the event
  loop and marked :attr:`Keeper.lost`; its resource is told (``notify``), and its check
  restarts the process, whose output had nowhere to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from convergent.host.children import ended

if TYPE_CHECKING:
    from convergent.resources.procfiles import Store

__all__ = ["Keeper", "Keepers"]


class Keeper:
    """A log's keeper this run started and holds: its PID, the pidfd that says when it
    ended (-1 once handed to its reaper), the writing end of its pipe (-1 once let go
    of), whether it ended while held (``lost``) and its exit status then (``code``:
    negative, the signal that killed it; None if unknown), and what to tell then."""

    __slots__ = ("code", "lost", "notify", "pid", "pidfd", "pipe")

    def __init__(self, pid: int, pidfd: int, pipe: int, notify: Callable[[], None]) -> None:
        self.pid, self.pidfd, self.pipe, self.notify = pid, pidfd, pipe, notify
        self.lost = False
        self.code: int | None = None


class Keepers:
    """The keepers a run holds, by resource id (``ctx.shared(Keepers)``)."""

    def __init__(self) -> None:
        self._held: dict[str, Keeper] = {}

    def output_for(self, rid: str, store: Store, notify: Callable[[], None]) -> tuple[int, Keeper]:
        """A writing end of the pipe to the keeper of ``rid``'s log, of the caller's (to
        close once the process has it), and that keeper; a keeper is started (and held)
        when none is, or the one held has ended. ``notify`` is called if the keeper ends
        while held. Raises OSError when no keeper can be started."""
        keeper = self._held.get(rid)
        if keeper is not None and ended(keeper.pidfd):
            self._gone(rid, keeper)  # its reaping was still to run
            keeper = None
        if keeper is None:
            keeper = self._start(rid, store, notify)
        keeper.notify = notify  # the resource starting it now (another one after a swap)
        try:
            fd = os.open(f"/proc/self/fd/{keeper.pipe}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:  # no /proc: the held description itself, blocking as a start expects
            fd = os.dup(keeper.pipe)
            os.set_blocking(fd, True)
        return fd, keeper

    def release(self, rid: str) -> None:
        """Let go of the keeper of ``rid``'s log: it ends when the process does, and is
        reaped then by a thread of its own."""
        keeper = self._held.pop(rid, None)
        if keeper is None:
            return
        os.close(keeper.pipe)
        keeper.pipe = -1
        with contextlib.suppress(RuntimeError):  # no running loop: no reader to remove
            asyncio.get_running_loop().remove_reader(keeper.pidfd)
        pid, pidfd = keeper.pid, keeper.pidfd
        keeper.pidfd = -1
        import threading

        try:
            threading.Thread(
                target=_reap, args=(pid, pidfd), name=f"reap log keeper {pid}", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had (a pids limit): a zombie, not a leak
            os.close(pidfd)

    def close(self) -> None:
        """The end of the run: let go of every keeper still held."""
        for rid in list(self._held):
            self.release(rid)

    def _start(self, rid: str, store: Store, notify: Callable[[], None]) -> Keeper:
        pipe, pid = store.keep_log(rid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.close(pipe)
            raise
        keeper = self._held[rid] = Keeper(pid, pidfd, pipe, notify)
        asyncio.get_running_loop().add_reader(pidfd, self._gone, rid, keeper)
        return keeper

    def _gone(self, rid: str, keeper: Keeper) -> None:
        """``keeper`` has ended while held: reap it, let go of it, tell its resource."""
        if keeper.pidfd < 0:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().remove_reader(keeper.pidfd)
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(keeper.pid, os.WNOHANG)
            if pid:
                keeper.code = os.waitstatus_to_exitcode(status)
        os.close(keeper.pidfd)
        keeper.pidfd = -1
        if self._held.get(rid) is keeper:
            del self._held[rid]
        if keeper.pipe >= 0:
            os.close(keeper.pipe)
            keeper.pipe = -1
            keeper.lost = True
            keeper.notify()


def _reap(pid: int, pidfd: int) -> None:
    try:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
