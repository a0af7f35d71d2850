"""Atomic writes: temp files created private next to their target, committed in batches.

::

    with fs.locate(path, create=True) as at:
        fd, temp = atomic.create_temp(at, data, mode=0o640, uid=0, gid=33)
        await ctx.shared(atomic.Commits).commit(fd, temp, at, tree=False)

- :func:`create_temp` makes the temp file in the target's directory through the
  directory descriptor (``O_CREAT|O_EXCL|O_NOFOLLOW``), mode 0600 (or the final mode if
  stricter), gives it its final owner before the first byte, writes, and sets the final
  mode. Its name is ``.NAME.convergent-XXXX.tmp``, XXXX starting with a token of this
  process.
- :class:`Commits` fsyncs and renames (``renameat``) the temp files written in one pass
  of the event loop together.
- :class:`Sweeper` removes the temp files a killed agent left for a managed name: only
  regular files in that directory, matching that name's pattern, owned by the agent's
  uid (or carrying the ``trusted.convergent`` attribute, which only root can set, put on
  temp files given to another owner), never one made by this process. A look-alike
  made by another user stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from typing import TYPE_CHECKING, Any

from convergent.host.fs import At, default_mode, locate

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

__all__ = [
    "COMMIT_BATCH",
    "MARK",
    "SYNC",
    "SYNCFS_FROM",
    "Commits",
    "Sweeper",
    "create_temp",
    "replace",
    "temp_name",
    "temp_prefix",
    "write_file",
]

COMMIT_BATCH = 256  # written temp files (and their descriptors) waiting at most per batch
# How a batch's data is made durable: "syncfs", "fdatasync-pool" or "fsync" (bench/writes.py
# compares them; "none", no sync at all, is its floor and nothing else's).
SYNC = "syncfs"
# Fewer files than this in a batch are fsynced one by one instead: a repair of one file
# should not wait for what other processes left dirty on the file system.
SYNCFS_FROM = 8
MARK = "trusted.convergent"  # xattr only root can set: "this temp file is the agent's"
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_token: list[str] = []
_counter = [0]


def temp_prefix(name: str) -> str:
    """The start of every temp file name for the file ``name``."""
    short = name if len(name.encode()) <= 200 else name[:50]
    return f".{short}.convergent-"


def temp_name(name: str) -> str:
    """A new temp name for the file ``name`` (this process's token and a counter): what
    :func:`create_temp` uses, and what a kind making a symlink to rename into place uses."""
    _counter[0] += 1
    return f"{temp_prefix(name)}{_run_token()}{_counter[0]:x}.tmp"


def _run_token() -> str:
    if not _token:
        _token.append(os.urandom(4).hex())
    return _token[0]


def create_temp(at: At, data: bytes, mode: int | None, uid: int, gid: int) -> tuple[int, str]:
    """A new temp file next to ``at`` holding ``data``, with its final owner and mode;
    still open (:meth:`Commits.commit` fsyncs and renames it). Created ``O_EXCL``; with
    no owner to give it and no special bit, in its final mode at once (fchmodded only if
    the umask or a default ACL took bits away); otherwise mode 0600 (or ``mode`` if
    stricter), chowned before the first byte is written and given its mode after."""
    final = default_mode() if mode is None else mode
    # Created in its final mode when it has no owner to be given first and no special
    # bits: the umask or a default ACL of the directory can only take bits away, which
    # one fstat sees (then fchmod, as in the other case).
    direct = gid == -1 and uid in (-1, _euid()) and not final & ~0o777
    while True:
        temp = temp_name(at.name)
        try:
            fd = os.open(temp, _CREATE, final if direct else 0o600 & final, dir_fd=at.fd)
            break
        except FileExistsError:
            continue
    try:
        if not direct and (uid != -1 or gid != -1):
            os.fchown(fd, uid, gid)
            if uid not in (-1, _euid()):
                with contextlib.suppress(OSError):
                    os.setxattr(fd, MARK, b"1")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if not direct or os.fstat(fd).st_mode & 0o7777 != final:
            os.fchmod(fd, final)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=at.fd)
        raise
    return fd, temp


def _euid() -> int:
    if not _ids:
        _ids.append(os.geteuid())
    return _ids[0]


_ids: list[int] = []


def replace(at: At, data: bytes, mode: int | None, uid: int, gid: int) -> None:
    """Put a file holding ``data`` at ``at`` now: a private temp file (:func:`create_temp`),
    fsynced and renamed over the name (never followed); the directory is not fsynced."""
    fd, temp = create_temp(at, data, mode, uid, gid)
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, at.name, src_dir_fd=at.fd, dst_dir_fd=at.fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=at.fd)
        raise


def write_file(
    path: str, data: bytes, *, mode: int | None = None, uid: int = -1, gid: int = -1
) -> None:
    """Replace ``path`` by a file holding ``data``, at once and atomically (one file; a
    kind's writes go through :class:`Commits`, which batches them).

    The directory must exist and is resolved with CHASE_SAFE rules (:func:`fs.locate`);
    the temp file is private from the start (:func:`create_temp`), fsynced, renamed over
    ``path`` (a symlink there is replaced, not followed), and the directory fsynced.
    ``mode`` None: 0666 less the umask. Raises OSError (``fs.PathRefused`` included).
    """
    with locate(path) as at:
        replace(at, data, mode, uid, gid)
        dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=at.fd)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Sweeper:
    """Removes the temp files a killed agent left; one instance per engine run.

    Each directory is listed once per run; :meth:`sweep` then removes the stale temp
    files of one managed name: regular files in that directory, named
    ``.NAME.convergent-XXXX.tmp``, owned by the agent's uid (or marked with the
    ``trusted.convergent`` attribute only root can set), and not made by this process.
    A look-alike made by another user is left alone.
    """

    __slots__ = ("_dirs",)

    def __init__(self) -> None:
        self._dirs: dict[tuple[int, int], dict[str, list[str]]] = {}

    def sweep(self, at: At) -> list[str]:
        """Remove the stale temp files of ``at.name``; returns their names."""
        index = self._dirs.get(at.ident)
        if index is None:
            index = self._dirs[at.ident] = _list_temps(at)
        names = index.pop(temp_prefix(at.name), None)
        removed: list[str] = []
        for name in names or ():
            try:
                st = os.stat(name, dir_fd=at.fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_uid != os.geteuid() and not _marked(at, name):
                    continue
                os.unlink(name, dir_fd=at.fd)
            except OSError:
                continue
            removed.append(name)
        return removed


def _list_temps(at: At) -> dict[str, list[str]]:
    """Temp file names in ``at``'s directory not made by this process, by prefix."""
    mine = _run_token()
    found: dict[str, list[str]] = {}
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=at.fd)
    except OSError:
        return found
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    for name in names:
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        head, sep, tail = name.rpartition(".convergent-")
        middle = tail[:-4]
        if not sep or not middle or middle.startswith(mine):
            continue
        if not all(c in "0123456789abcdef" for c in middle):
            continue
        found.setdefault(f"{head}.convergent-", []).append(name)
    return found


def _marked(at: At, name: str) -> bool:
    try:
        fd = os.open(name, _OPEN, dir_fd=at.fd)
    except OSError:
        return False
    try:
        return os.getxattr(fd, MARK) == b"1"
    except OSError:
        return False
    finally:
        os.close(fd)


# -- committing temp files -----------------------------------------------------------------


class Commits:
    """Written temp files waiting for their sync and rename; one instance per engine run:
    a group commit that every file apply of the run joins.

    :meth:`commit` queues a temp file and returns once its bytes and its new name are on
    disk. The queue is flushed by a callback scheduled when its first file arrives, so
    every file written in the same pass of the event loop goes in one batch (or as soon
    as :data:`COMMIT_BATCH` are waiting, which bounds the open descriptors). A flush
    makes the data of every temp file durable (:data:`SYNC`: one ``syncfs`` per file
    system by default, an fsync each below :data:`SYNCFS_FROM` files), then renames
    each over its path, then fsyncs each directory once, and only then tells each
    caller. So a reader never sees a torn file (the name
    points at the old file or the whole new one), and a change that was reported is on
    disk: a crash after the report loses nothing. bench/writes.py measures the ways
    (docs/performance.md keeps the figures). A file whose ``commit`` was cancelled before
    the flush is discarded: its path is left as it was. The files of one batch in one
    directory share one directory descriptor.
    """

    __slots__ = ("_dirs", "_flushes", "_loop", "_paths", "_scheduled", "_waiting", "batch")

    def __init__(self) -> None:
        self._waiting: list[_Temp] = []
        self._dirs: dict[tuple[int, int], int] = {}
        self._paths: dict[str, At] = {}  # directory path -> its descriptor in this batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes = 0  # a lent descriptor is good until the next flush
        self._scheduled = False
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
        loop = self._loop
        if loop is None:
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
        """Sync the data of every waiting file, rename each, sync each directory once;
        then each caller gets its own outcome."""
        waiting, self._waiting = self._waiting, []
        dirs, self._dirs = self._dirs, {}
        self._paths = {}
        self._flushes += 1
        try:
            live = [item for item in waiting if item.opened()]
            synced = _sync_data(live, dirs)
            renamed = [item for item in synced if item.rename()]
            failed = _sync_dirs({item.ident for item in renamed}, dirs)
            for item in renamed:
                if item.ident in failed:
                    item.fail(failed[item.ident])
                elif not item.done.done():
                    item.done.set_result(None)
        except BaseException:
            for item in waiting:
                item.drop()
            raise
        finally:
            for dir_fd in dirs.values():
                os.close(dir_fd)

    def close(self) -> None:
        """End of the run: discard the files whose commit never ran (cancelled applies)."""
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            item.drop()
        dirs, self._dirs = self._dirs, {}
        self._paths = {}
        self._flushes += 1
        for dir_fd in dirs.values():
            os.close(dir_fd)


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


def _sync_data(items: list[_Temp], dirs: dict[tuple[int, int], int]) -> list[_Temp]:
    """Make the data of ``items`` durable and close them; the ones that made it."""
    if not items:
        return items
    if SYNC == "fsync" or (SYNC == "syncfs" and len(items) < SYNCFS_FROM):
        for item in items:
            item.sync(os.fsync)
    elif SYNC == "none":  # bench/writes.py's floor only: nothing made durable
        for item in items:
            item.sync(None)
    elif SYNC == "fdatasync-pool":
        list(_pool().map(lambda item: item.sync(os.fdatasync), items))
    else:
        errors: dict[int, OSError] = {}
        for dev in {item.ident[0] for item in items}:
            ident = next(i for i in dirs if i[0] == dev)
            try:
                fd = _open_dir(dirs[ident])
                try:
                    _syncfs(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                errors[dev] = exc
        for item in items:
            item.sync(None, errors.get(item.ident[0]))
    return [item for item in items if item.fd == -1 and not item.done.done()]


def _sync_dirs(
    idents: set[tuple[int, int]], dirs: dict[tuple[int, int], int]
) -> dict[tuple[int, int], OSError]:
    """fsync each directory once; ``{ident: error}`` for the ones that failed."""
    failed: dict[tuple[int, int], OSError] = {}
    for ident in idents if SYNC != "none" else ():
        try:
            fd = _open_dir(dirs[ident])
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            failed[ident] = exc
    return failed


def _syncfs(fd: int) -> None:
    """``syncfs(2)`` of the file system holding ``fd`` (Python has no binding of its own)."""
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    if _libc[0].syncfs(fd) != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _pool() -> Executor:
    if not _threads:
        from concurrent.futures import ThreadPoolExecutor

        _threads.append(ThreadPoolExecutor(16, thread_name_prefix="convergent-sync"))
    return _threads[0]


_libc: list[Any] = []
_threads: list[Executor] = []


class _Temp:
    """One written temp file on its way to ``name``; ``done`` tells its ``commit``.
    ``fd`` is -1 once the file is closed."""

    __slots__ = ("dir_fd", "done", "fd", "ident", "name", "temp", "tree")

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

    def opened(self) -> bool:
        """False (and the file discarded) when its commit was cancelled."""
        if self.done.cancelled():
            self.drop()
            return False
        return True

    def sync(self, how: Callable[[int], None] | None, error: OSError | None = None) -> None:
        """Sync with ``how`` (None: already synced, or ``error``) and close; a failure is
        this file's outcome (it is discarded)."""
        fd, self.fd = self.fd, -1
        try:
            try:
                if error is not None:
                    raise error
                if how is not None:
                    how(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.fail(exc)

    def rename(self) -> bool:
        """Put the synced temp file in place (after removing a directory tree there)."""
        try:
            if self.tree:
                import shutil

                shutil.rmtree(self.name, dir_fd=self.dir_fd)
            os.rename(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except Exception as exc:
            self.fail(exc)
            return False
        return True

    def drop(self) -> None:
        """Discard the temp file (closing it first when it is still open); its commit is
        cancelled unless it already has an outcome."""
        if self.fd != -1:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        self._discard()
        if not self.done.done():
            self.done.cancel()

    def fail(self, exc: Exception) -> None:
        self._discard()
        if not self.done.done():
            self.done.set_exception(exc)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self.dir_fd)
