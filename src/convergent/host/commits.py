"""The run's group commit of written temp files (:class:`Commits`, also reached as
``atomic.Commits``): their data synced, their renames, their directories synced, in
batches, with the event loop free while a sync runs.

::

    at = commits.locate(path, create=True)
    fd, temp = atomic.create_temp(at, data, mode=0o640, uid=0, gid=33)
    await commits.commit(fd, temp, at, tree=False)   # renamed, and on disk

A batch goes through three steps in this order, each after the one before has ended:
the data of its temp files is made durable, the temp files are renamed over their
names (on the event loop, in the order the batches were flushed), each directory is
fsynced once; then every caller is told its own outcome. The syncs run in one thread
of their own, so the event loop keeps handling events, checking and writing the next
batch while a batch syncs. The one exception is a small batch (fewer than
:data:`SYNCFS_FROM` files) with nothing ahead of it, a drift repair: it is fsynced,
renamed and its directory fsynced at once on the loop, as one step. Its directory's
fsync in the thread was measured (bench/drift.py, docs/performance.md): better under
heavy load, worse on a quieter machine (the hand-off, a GIL switch and the two fsyncs
contending for the disk cost more than the loop gains), so it stays on the loop.

Such a repair holds the file it replaces across its rename, freed when the sync thread
closes it, not in the rename (:mod:`convergent.host.holds`).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import os
from typing import TYPE_CHECKING, Any

from convergent.host.fs import At, locate
from convergent.host.holds import Holds
from convergent.host.syncthread import later, pool, sync_thread

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["COMMIT_BATCH", "SYNC", "SYNCFS_FROM", "Commits"]

COMMIT_BATCH = 256  # written temp files (and their descriptors) waiting at most per batch
# How a batch's data is made durable: "syncfs", "fdatasync-pool" or "fsync" (bench/writes.py
# compares them; "none", no sync at all, is its floor and nothing else's).
SYNC = "syncfs"
# Fewer files than this in a batch are fsynced one by one instead: a repair of one file
# should not wait for what other processes left dirty on the file system.
SYNCFS_FROM = 8


class Commits:
    """Written temp files waiting for their sync and rename; one instance per engine run:
    a group commit that every file apply of the run joins.

    :meth:`commit` queues a temp file and returns once its bytes and its new name are on
    disk. The queue is flushed by a callback scheduled when its first file arrives, so
    every file written in the same pass of the event loop goes in one batch (or as soon
    as :data:`COMMIT_BATCH` are waiting, which bounds the open descriptors). A flush
    makes the data of every temp file durable (:data:`SYNC`: one ``syncfs`` per file
    system by default, the temp files closed first; an fsync each below
    :data:`SYNCFS_FROM` files), then renames each over its path, then fsyncs each
    directory once, and only then tells each caller. So a reader never sees a torn file
    (the name points at the old file or the whole new one), and a change that was
    reported is on disk: a crash after the report loses nothing. The syncs run in a
    thread of their own (module docstring); the renames stay on the event loop,
    batch after batch in flush order, so a name written twice ends with the later bytes.
    bench/writes.py measures the ways (docs/performance.md keeps the figures). A file
    whose ``commit`` was cancelled before the flush is discarded: its path is left as it
    was. The files of one batch in one directory share one directory descriptor.
    """

    __slots__ = (
        "_ahead",
        "_dirs",
        "_flushes",
        "_holds",
        "_loop",
        "_paths",
        "_scheduled",
        "_steps",
        "_waiting",
        "batch",
    )

    def __init__(self) -> None:
        self._waiting: list[_Temp] = []
        self._dirs: dict[tuple[int, int], int] = {}
        self._paths: dict[str, At] = {}  # directory path -> its descriptor in this batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes = 0  # a lent descriptor is good until the next flush
        self._scheduled = False
        self._ahead = 0  # batches flushed whose renames have not run yet
        self._steps: dict[_Step, None] = {}  # sent to the sync thread, next step not run
        self._holds = Holds()  # the files repairs replaced, closed in the sync thread
        self.batch = COMMIT_BATCH

    def locate(self, path: str, *, create: bool = False, follow: bool = False) -> At:
        """:func:`fs.locate` of ``path``, for a file about to be committed: a directory
        already found for this batch is used again (no walk, no syscall). The batch holds
        that descriptor until its flush in any case (its renames go through it), so the
        file lands exactly where it would have landed anyway; the next batch walks again.
        The caller commits without awaiting anything else first (a flush in between
        closes a lent descriptor: :meth:`commit` refuses it then).
        """
        head, _, name = path.rpartition("/")
        found = self._paths.get(head or "/") if name and not follow else None
        if found is None:
            return locate(path, create=create, follow=follow)
        return _Borrowed(found.fd, name, found.dir, found.ident, found.owner, self._flushes)

    async def commit(self, fd: int, temp: str, at: At, tree: bool) -> None:
        """Make ``fd`` (the written ``temp`` in ``at``'s directory) durable, close it,
        rename ``temp`` to ``at.name`` and sync the directory. Takes over ``fd`` and
        ``at``'s descriptor.

        ``tree``: the target is a directory, removed with everything in it just before the
        rename. Raises what the sync, close, removal or rename raised (``temp`` is gone).
        """
        loop = self._loop = asyncio.get_running_loop()
        if isinstance(at, _Borrowed) and at.flushes != self._flushes:
            os.close(fd)  # the temp file stays for the next run's sweep
            raise RuntimeError("a directory lent by Commits.locate outlived its batch")
        dir_fd = self._dirs.get(at.ident)
        if dir_fd is None:
            dir_fd = self._dirs[at.ident] = at.fd
            self._paths[at.dir] = at.take()
        else:
            at.close()
        item = _Temp(fd, temp, dir_fd, at.ident, at.name, tree, loop.create_future())
        self._waiting.append(item)
        if len(self._waiting) >= self.batch:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        await item.done

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Start the waiting files on their way: their data synced, renamed, their
        directories synced, each caller told its own outcome (all at once on the loop
        for a small batch with nothing ahead of it, else the syncs in the sync thread)."""
        waiting, self._waiting = self._waiting, []
        batch = _Batch([item for item in waiting if item.opened()], self._dirs)
        self._dirs, self._paths = {}, {}
        self._flushes += 1
        try:
            if not batch.items or SYNC == "none":  # "none": bench/writes.py's floor only
                batch.rename()
                batch.close_dirs()
                batch.settle()
            elif self._ahead == 0 and len(batch.items) < SYNCFS_FROM:
                batch.sync_data()  # a repair: all at once, no thread (see the docstring)
                holds = self._holds if not self._steps else None  # nothing ahead in the thread
                held = batch.rename(holds)
                if holds is not None:
                    holds.release(held, later)
                batch.sync_dirs()
                batch.settle()
            else:
                if SYNC == "syncfs" and len(batch.items) >= SYNCFS_FROM:
                    batch.close_files()  # a syncfs needs none of them: fewer held open
                self._submit(batch.sync_data, self._synced, batch)
                self._ahead += 1
        except BaseException:
            batch.drop()
            raise

    def _synced(self, batch: _Batch) -> None:
        self._ahead -= 1
        self._renamed(batch)

    def _renamed(self, batch: _Batch) -> None:
        batch.rename()
        self._submit(batch.sync_dirs, _Batch.settle, batch)

    def _submit(
        self, job: Callable[[], None], then: Callable[[_Batch], None], batch: _Batch
    ) -> None:
        """Run ``job`` in the sync thread, then ``then(batch)`` on the event loop. Sent
        through ``run_in_executor``, so the loop (and a test's virtual clock) knows that
        real work is under way."""
        step = _Step(job, then, batch)
        loop = self._loop
        assert loop is not None
        try:
            done = loop.run_in_executor(sync_thread(), step.run)
        except BaseException:
            batch.drop()
            raise
        self._steps[step] = None
        done.add_done_callback(functools.partial(self._after, step))

    def _after(self, step: _Step, done: asyncio.Future[None]) -> None:
        self._next(step)

    def _next(self, step: _Step) -> None:
        if step not in self._steps:  # close() ran it already
            return
        del self._steps[step]
        then, batch, error = step.then, step.batch, step.error
        if error is None:
            then(batch)
            return
        if then == self._synced:  # the data sync broke off: nothing was renamed
            self._ahead -= 1
            batch.fail(error)
            batch.close_files()
            batch.rename()
        batch.close_dirs()
        batch.fail(error)
        batch.settle()

    def close(self) -> None:
        """End of the run: discard the files whose commit never ran (cancelled applies),
        and finish the batches under way (this waits for their syncs)."""
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            item.drop()
        dirs, self._dirs = self._dirs, {}
        self._paths = {}
        self._flushes += 1
        for dir_fd in dirs.values():
            os.close(dir_fd)
        while self._steps:
            step = next(iter(self._steps))
            step.wait()
            self._next(step)
        if self._holds.pending:  # the replaced files' descriptors: closed before the end
            sync_thread().drain()


class _Borrowed(At):
    """A batch's directory descriptor lent to one more file: closing it closes nothing
    (the batch closes the descriptor after its flush)."""

    __slots__ = ("flushes",)

    def __init__(
        self, fd: int, name: str, directory: str, ident: tuple[int, int], owner: int, flushes: int
    ) -> None:
        super().__init__(fd, name, directory, ident, owner)
        self.flushes = flushes  # the Commits' flush count when lent

    def take(self) -> At:
        taken = _Borrowed(self.fd, self.name, self.dir, self.ident, self.owner, self.flushes)
        self.fd = -1
        return taken

    def close(self) -> None:
        self.fd = -1


def _open_dir(dir_fd: int) -> int:
    """A readable descriptor of the directory ``dir_fd`` (an ``O_PATH`` one cannot sync)."""
    return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)


class _Batch:
    """The files of one flush and their directories' descriptors (which it closes).

    :meth:`sync_data` and :meth:`sync_dirs` may run in the sync thread: they touch no
    future, only each file's ``error``; :meth:`rename`, :meth:`settle` and :meth:`drop`
    run on the event loop."""

    __slots__ = ("dirs", "items")

    def __init__(self, items: list[_Temp], dirs: dict[tuple[int, int], int]) -> None:
        self.items = items
        self.dirs = dirs

    def close_files(self) -> None:
        for item in self.items:
            item.sync(None)

    def sync_data(self) -> None:
        """Make the data of every file durable and close it (a failure is its outcome)."""
        items = self.items
        if SYNC == "fsync" or (SYNC == "syncfs" and len(items) < SYNCFS_FROM):
            for item in items:
                item.sync(os.fsync)
        elif SYNC == "fdatasync-pool":
            list(pool().map(lambda item: item.sync(os.fdatasync), items))
        else:
            errors: dict[int, OSError] = {}
            for dev in {item.ident[0] for item in items}:
                ident = next(i for i in self.dirs if i[0] == dev)
                try:
                    fd = _open_dir(self.dirs[ident])
                    try:
                        _syncfs(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    errors[dev] = exc
            for item in items:
                item.sync(None, errors.get(item.ident[0]))

    def rename(self, holds: Holds | None = None) -> list[int]:
        """Put every synced file in place; a file that failed is discarded. ``holds``:
        the files replaced are held, their descriptors returned (:mod:`.holds`)."""
        held: list[int] = []
        try:
            for item in self.items:
                fd = item.rename(holds)
                if fd != -1:
                    held.append(fd)
        except BaseException:
            if holds is not None:
                holds.drop(held)
            raise
        return held

    def sync_dirs(self) -> None:
        """fsync each directory of a renamed file once, then close every directory."""
        try:
            failed: dict[tuple[int, int], OSError] = {}
            for ident in {item.ident for item in self.items if item.error is None}:
                try:
                    fd = _open_dir(self.dirs[ident])
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:
                    failed[ident] = exc
            for item in self.items:
                if item.error is None and item.ident in failed:
                    item.error = failed[item.ident]
        finally:
            self.close_dirs()

    def close_dirs(self) -> None:
        dirs, self.dirs = self.dirs, {}
        for dir_fd in dirs.values():
            with contextlib.suppress(OSError):
                os.close(dir_fd)

    def fail(self, exc: Exception) -> None:
        for item in self.items:
            if item.error is None:
                item.error = exc

    def settle(self) -> None:
        """Tell each caller its outcome (those cancelled meanwhile are not told)."""
        for item in self.items:
            item.settle()

    def drop(self) -> None:
        """Discard every file not renamed yet and cancel its commit."""
        for item in self.items:
            item.drop()
        self.close_dirs()


def _syncfs(fd: int) -> None:
    """``syncfs(2)`` of the file system holding ``fd`` (Python has no binding of its own)."""
    if not _libc:  # bound on first use: (syncfs, get_errno)
        from convergent.host import libc

        _libc.extend((libc.function("syncfs", libc.c_int, libc.c_int), libc.get_errno))
    syncfs, get_errno = _libc
    if syncfs(fd) != 0:
        errno = get_errno()
        raise OSError(errno, os.strerror(errno))


class _Step:
    """One job for the sync thread and what follows it on the event loop."""

    __slots__ = ("batch", "error", "finished", "job", "then")

    def __init__(
        self, job: Callable[[], None], then: Callable[[_Batch], None], batch: _Batch
    ) -> None:
        self.job = job
        self.then = then
        self.batch = batch
        self.error: Exception | None = None
        self.finished = _thread.allocate_lock()  # held until the job has run
        self.finished.acquire()

    def run(self) -> None:
        """In the sync thread."""
        try:
            self.job()
        except Exception as exc:
            self.error = exc
        finally:
            self.finished.release()

    def wait(self) -> None:
        """Block until the job has run."""
        with self.finished:
            pass


_libc: list[Any] = []


class _Temp:
    """One written temp file on its way to ``name``; ``done`` tells its ``commit``.
    ``fd`` is -1 once the file is closed; ``error`` is its failure (it is discarded)."""

    __slots__ = ("dir_fd", "done", "error", "fd", "ident", "name", "renamed", "temp", "tree")

    def __init__(
        self,
        fd: int,
        temp: str,
        dir_fd: int,
        ident: tuple[int, int],
        name: str,
        tree: bool,
        done: asyncio.Future[None],
    ) -> None:
        self.fd = fd
        self.temp = temp
        self.dir_fd = dir_fd
        self.ident = ident
        self.name = name
        self.tree = tree
        self.done = done
        self.error: Exception | None = None
        self.renamed = False

    def opened(self) -> bool:
        """False (and the file discarded) when its commit was cancelled."""
        if self.done.cancelled():
            self.drop()
            return False
        return True

    def sync(self, how: Callable[[int], None] | None, error: OSError | None = None) -> None:
        """Sync with ``how`` (None: already synced, or ``error``) and close; a failure is
        this file's outcome."""
        fd, self.fd = self.fd, -1
        if fd == -1:  # closed before a syncfs
            if error is not None and self.error is None:
                self.error = error
            return
        try:
            try:
                if error is not None:
                    raise error
                if how is not None:
                    how(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if self.error is None:
                self.error = exc

    def rename(self, holds: Holds | None = None) -> int:
        """Put the synced temp file in place (after removing a directory tree there), or
        discard it when something failed. ``holds``: what it replaces is held, its
        descriptor returned (-1: none)."""
        if self.error is None:
            held = -1
            try:
                if self.tree:
                    import shutil

                    shutil.rmtree(self.name, dir_fd=self.dir_fd)
                elif holds is not None:
                    held = holds.hold(self.name, self.dir_fd, self.ident[0])
                os.rename(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
                self.renamed = True
                return held
            except Exception as exc:
                self.error = exc
            finally:
                if held != -1 and not self.renamed and holds is not None:
                    holds.drop([held])
        self._discard()
        return -1

    def settle(self) -> None:
        if not self.done.done():
            if self.error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(self.error)

    def drop(self) -> None:
        """Discard the temp file (closing it first when it is still open) unless it was
        renamed; its commit is cancelled unless it already has an outcome."""
        if self.fd != -1:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if not self.renamed:
            self._discard()
        if not self.done.done():
            self.done.cancel()

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self.dir_fd)
