"""The thread the syncs of :class:`~convergent.host.commits.Commits` run in
(:class:`SyncThread`, one per process, started on first use), and the pool of the
``fdatasync-pool`` way of syncing.

Batch after batch, its data's sync and its directories' run in this thread while the
event loop goes on (host/commits.py); the files repairs replaced are closed here too
(host/holds.py).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor, Future

    _ExecutorBase = Executor
else:  # a run that writes files does not import concurrent.futures (cli/lazystd.py)
    _ExecutorBase = object

__all__ = ["SyncThread", "later", "pool", "sync_thread"]


class SyncThread(_ExecutorBase):
    """The one thread that runs every batch's syncs, one after the other, in the order
    they were sent. A daemon: nothing is under way in it when a run ends
    (:meth:`Commits.close` waits for it), and no exit waits for it.

    :meth:`submit` returns an asyncio future of the calling loop (``run_in_executor``
    passes it through as it is), set through ``call_soon_threadsafe``: none of the
    locks and conditions of a ``concurrent.futures.Future`` per job."""

    def __init__(self) -> None:
        self._jobs: deque[tuple[asyncio.Future[Any] | None, Callable[[], Any]]] = deque()
        self._wake = _thread.allocate_lock()  # released when jobs are waiting
        self._wake.acquire()
        self._ident = -1  # the thread's, once it runs
        _thread.start_new_thread(self._serve, ())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)`` (from a running event loop's thread only)."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append((done, functools.partial(fn, *args, **kwargs)))
        if self._wake.locked():
            self._wake.release()
        return done  # type: ignore[return-value]  # an asyncio future: see the docstring

    def later(self, job: Callable[[], None]) -> None:
        """Queue ``job``, its outcome told to no one (whatever it raises is dropped)."""
        self._jobs.append((None, job))
        if self._wake.locked():
            self._wake.release()

    def drain(self) -> None:
        """Block until every job queued so far has run (not from the sync thread)."""
        if _thread.get_ident() == self._ident:
            raise RuntimeError("the sync thread cannot wait for its own jobs")
        done = _thread.allocate_lock()
        done.acquire()
        self.later(done.release)
        with done:
            pass

    def _serve(self) -> None:
        self._ident = _thread.get_ident()
        jobs, wake = self._jobs, self._wake
        while True:
            wake.acquire()
            while jobs:
                done, job = jobs.popleft()
                if done is None:
                    with contextlib.suppress(BaseException):  # no one to tell; it goes on
                        job()
                    continue
                try:
                    result, error = job(), None
                except BaseException as exc:
                    result, error = None, exc
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    done.get_loop().call_soon_threadsafe(_outcome, done, result, error)


def _outcome(done: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not done.done():
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)


def later(job: Callable[[], None]) -> None:
    """Run ``job`` in the sync thread, its outcome told to no one."""
    sync_thread().later(job)


def sync_thread() -> SyncThread:
    """The process's sync thread, started on first use."""
    if not _threads:
        _threads.append(SyncThread())
    return _threads[0]


def pool() -> Executor:
    """The thread pool of the ``fdatasync-pool`` way (bench/writes.py), made on first use."""
    if not _pools:
        from concurrent.futures import ThreadPoolExecutor

        _pools.append(ThreadPoolExecutor(16, thread_name_prefix="convergent-fdatasync"))
    return _pools[0]


_threads: list[SyncThread] = []
_pools: list[Executor] = []
