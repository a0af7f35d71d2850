"""Reading and writing one regular file for the kinds that edit files (``line``, ``cron``).

Everything goes through the host layer: the path is resolved with CHASE_SAFE rules
(:func:`convergent.host.fs.locate`), the file opened without following a symlink or
opening a FIFO (:func:`convergent.host.fs.read_regular`), and content written to a
private temp file that is fsynced and renamed over the path
(:mod:`convergent.host.atomic`), so no reader ever sees half a file.

:class:`PathLocks` (one per run, ``ctx.shared(PathLocks)``) serialises the
read-modify-write of the resources that edit the same file: a writer holds the path's
lock from the read to the rename, so several ``line`` resources on one file never lose
each other's edits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from convergent.errors import ParamError, ResourceError
from convergent.host import atomic, fs
from convergent.resources.base import Context

__all__ = ["PathLocks", "absolute", "directory_missing", "read", "write"]


def absolute(field_name: str, path: str) -> str:
    """Normalise an absolute path; reject a relative one (ParamError naming the field)."""
    if not path.startswith("/"):
        raise ParamError(field_name, f"must be an absolute path (starting with /), got {path!r}")
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/")


def read(resource: str, path: str) -> tuple[bytes | None, os.stat_result | None]:
    """The bytes and stat of the regular file at ``path``; ``(None, None)`` when it (or a
    parent) does not exist. A symlink, FIFO, directory or device there is an error
    naming it (never followed, never opened blocking)."""
    try:
        at = fs.locate(path)
    except FileNotFoundError:
        return None, None
    except NotADirectoryError as exc:
        raise ResourceError(
            resource, f"cannot manage {path}: {exc.filename} is not a directory"
        ) from None
    except fs.PathRefused as exc:
        raise ResourceError(resource, exc.message) from None
    with at:
        st = fs.lstat(at)
        if st is None:
            return None, None
        if not stat.S_ISREG(st.st_mode):
            raise ResourceError(
                resource,
                f"{path} is a {fs.kind_name(st.st_mode)}, not a regular file; convergent "
                "does not follow or replace it: remove it or manage it with `file`",
            )
        try:
            return fs.read_regular(at)
        except FileNotFoundError:  # removed since the lstat
            return None, None
        except fs.PathRefused as exc:
            raise ResourceError(resource, exc.message) from None


def directory_missing(path: str) -> bool:
    """Whether a directory on the way to ``path`` is missing (the file itself may be)."""
    try:
        fs.locate(path).close()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except fs.PathRefused:
        return False  # said by whoever reads or writes it
    return False


async def write(
    ctx: Context,
    path: str,
    data: bytes,
    mode: int | None,
    uid: int = -1,
    gid: int = -1,
    *,
    parents: bool = False,
    keep_acl: bool = False,
) -> None:
    """Replace ``path`` by a file holding ``data`` with that mode and owner, atomically
    (errors name ``ctx.id``). ``parents``: create missing directories. ``keep_acl``:
    the file there now keeps its POSIX ACL (without it, the ACL's mask, shown as the
    group bits of ``mode``, would become the owning group's own access)."""
    resource = ctx.id
    try:
        at = fs.locate(path, create=parents)
    except FileNotFoundError:
        raise ResourceError(
            resource, f"the directory of {path} does not exist; create it first"
        ) from None
    except fs.PathRefused as exc:
        raise ResourceError(resource, exc.message) from None
    try:
        acl = _acl_of(at) if keep_acl else None
        ctx.shared(atomic.Sweeper).sweep(at)
        fd, temp = atomic.create_temp(at, data, mode, uid, gid)
    except BaseException:
        at.close()
        raise
    if acl is not None:
        try:
            os.setxattr(fd, _ACL, acl)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=at.fd)
            at.close()
            raise
    await ctx.shared(atomic.Commits).commit(fd, temp, at, False)


_ACL = "system.posix_acl_access"


def _acl_of(at: fs.At) -> bytes | None:
    """The POSIX ACL of the regular file at ``at`` (None: none, or no file there)."""
    try:
        fd, _ = fs.open_node(at, directory=False)
    except (FileNotFoundError, fs.PathRefused):  # no file (a symlink is replaced, not read)
        return None
    try:
        return os.getxattr(fd, _ACL)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
    finally:
        os.close(fd)


class PathLocks:
    """One :class:`asyncio.Lock` per file, for the run (``ctx.shared(PathLocks)``).

    A file is known by its directory's ``(st_dev, st_ino)`` and its name, so two
    spellings of one path (through root's symlink ``/var/run -> /run``) share a lock; a
    path whose directory is missing, by its text.
    """

    __slots__ = ("_locks", "_users")

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}

    @asynccontextmanager
    async def hold(self, path: str) -> AsyncIterator[None]:
        """Hold ``path``'s lock; the lock is forgotten once nobody holds or waits for it."""
        key = _identity(path)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            left = self._users[key] - 1
            if left:
                self._users[key] = left
            else:
                del self._users[key]
                del self._locks[key]


def _identity(path: str) -> Hashable:
    try:
        with fs.locate(path) as at:
            return (at.ident, at.name)
    except OSError:
        return path
