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

from convergent.host.fs import At, default_mode, locate

__all__ = [
    "COMMIT_BATCH",
    "MARK",
    "Commits",
    "Sweeper",
    "create_temp",
    "replace",
    "temp_name",
    "temp_prefix",
    "write_file",
]

COMMIT_BATCH = 128  # written temp files (and their descriptors) waiting at most per batch
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
    still open (:meth:`Commits.commit` fsyncs and renames it). Created ``O_EXCL``, mode
    0600 (or ``mode`` if stricter) and chowned before the first byte is written."""
    final = default_mode() if mode is None else mode
    while True:
        temp = temp_name(at.name)
        try:
            fd = os.open(temp, _CREATE, 0o600 & final, dir_fd=at.fd)
            break
        except FileExistsError:
            continue
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
            if uid not in (-1, os.geteuid()):
                with contextlib.suppress(OSError):
                    os.setxattr(fd, MARK, b"1")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, final)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=at.fd)
        raise
    return fd, temp


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
    """Written temp files waiting for their fsync and rename; one instance per engine run.

    :meth:`commit` queues a temp file and returns once it is fsynced and renamed over its
    path. The queue is flushed by a callback scheduled when its first file arrives, so
    every file written in the same pass of the event loop goes in one batch (or as soon
    as :data:`COMMIT_BATCH` are waiting, which bounds the open descriptors): all of them
    are fsynced, then renamed, in order. Measured on ext4, writing 1,000 new files with
    fsync takes about half the time this way, because the directory block and the inode
    table blocks the files share are written once per batch instead of once per file.
    Each file still has its own fsync before its own rename, so a crash leaves either the
    old file or the whole new one, never a torn one. A file whose ``commit`` was cancelled
    before the flush is discarded: its path is left as it was. The files of one batch in
    one directory share one directory descriptor.
    """

    __slots__ = ("_dirs", "_scheduled", "_waiting", "batch")

    def __init__(self) -> None:
        self._waiting: list[_Temp] = []
        self._dirs: dict[tuple[int, int], int] = {}
        self._scheduled = False
        self.batch = COMMIT_BATCH

    async def commit(self, fd: int, temp: str, at: At, tree: bool) -> None:
        """fsync and close ``fd`` (the written ``temp`` in ``at``'s directory), then
        rename ``temp`` to ``at.name``. Takes over ``fd`` and ``at``'s descriptor.

        ``tree``: the target is a directory, removed with everything in it just before the
        rename. Raises what the fsync, close, removal or rename raised (``temp`` is gone).
        """
        loop = asyncio.get_running_loop()
        dir_fd = self._dirs.get(at.ident)
        if dir_fd is None:
            dir_fd = self._dirs[at.ident] = at.take().fd
        else:
            at.close()
        item = _Temp(fd, temp, dir_fd, at.name, tree, loop.create_future())
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
        """fsync every waiting file, then rename each; each caller gets its own outcome."""
        waiting, self._waiting = self._waiting, []
        dirs, self._dirs = self._dirs, {}
        try:
            synced: list[_Temp] = []
            for n, item in enumerate(waiting):
                try:
                    if item.sync():
                        synced.append(item)
                except BaseException:
                    for rest in waiting[n + 1 :]:
                        rest.drop(opened=True)
                    for rest in synced:
                        rest.drop(opened=False)
                    raise
            for n, item in enumerate(synced):
                try:
                    item.rename()
                except BaseException:
                    for rest in synced[n + 1 :]:
                        rest.drop(opened=False)
                    raise
        finally:
            for dir_fd in dirs.values():
                os.close(dir_fd)

    def close(self) -> None:
        """End of the run: discard the files whose commit never ran (cancelled applies)."""
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            item.drop(opened=True)
        dirs, self._dirs = self._dirs, {}
        for dir_fd in dirs.values():
            os.close(dir_fd)


class _Temp:
    """One written temp file on its way to ``name``; ``done`` tells its ``commit``."""

    __slots__ = ("dir_fd", "done", "fd", "name", "temp", "tree")

    def __init__(
        self, fd: int, temp: str, dir_fd: int, name: str, tree: bool, done: asyncio.Future[None]
    ) -> None:
        self.fd = fd
        self.temp = temp
        self.dir_fd = dir_fd
        self.name = name
        self.tree = tree
        self.done = done

    def sync(self) -> bool:
        """fsync and close; False when it failed or was cancelled (then it is discarded)."""
        try:
            try:
                if self.done.cancelled():
                    self._discard()
                    return False
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
        except Exception as exc:
            self._fail(exc)
            return False
        except BaseException:
            self.drop(opened=False)
            raise
        return True

    def rename(self) -> None:
        """Put the synced temp file in place (after removing a directory tree there)."""
        try:
            if self.tree:
                import shutil

                shutil.rmtree(self.name, dir_fd=self.dir_fd)
            os.rename(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except Exception as exc:
            self._fail(exc)
            return
        except BaseException:
            self.drop(opened=False)
            raise
        if not self.done.done():
            self.done.set_result(None)

    def drop(self, *, opened: bool) -> None:
        """Discard the temp file (closing it first when it is still ``opened``)."""
        if opened:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self._discard()
        if not self.done.done():
            self.done.cancel()

    def _fail(self, exc: Exception) -> None:
        self._discard()
        if not self.done.done():
            self.done.set_exception(exc)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self.dir_fd)
