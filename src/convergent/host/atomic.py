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
- :class:`Commits` (:mod:`convergent.host.commits`) syncs and renames (``renameat``) the
  temp files written in one pass of the event loop together, its syncs in a thread.
- :class:`Sweeper` removes the temp files a killed agent left for a managed name: only
  regular files in that directory, matching that name's pattern, owned by the agent's
  uid (or carrying the ``trusted.convergent`` attribute, which only root can set, put on
  temp files given to another owner), never one made by a process still running (its
  name holds its pid: this process, or another agent writing in the same directory). A
  look-alike made by another user stays.
"""

from __future__ import annotations

import contextlib
import os
import stat

from convergent.host.commits import COMMIT_BATCH, Commits
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
    "write_all",
    "write_file",
]

MARK = "trusted.convergent"  # xattr only root can set: "this temp file is the agent's"
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_token: list[str] = []
_counter = [0]
_namespace: list[int] = []


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
    """This process's part of its temp names: its pid and PID namespace (a sweep by
    another agent leaves a live writer's temp files alone) and a random token."""
    if not _token:
        _token.append(f"{os.getpid():x}.{_pid_namespace():x}.{os.urandom(4).hex()}")
    return _token[0]


def _pid_namespace() -> int:
    """The inode of this process's PID namespace (0 without /proc), read once."""
    if not _namespace:
        try:
            _namespace.append(os.stat("/proc/self/ns/pid").st_ino)
        except OSError:
            _namespace.append(0)
    return _namespace[0]


def _writer_lives(middle: str) -> bool:
    """Whether the process that made a temp file (``middle``: what its name holds
    between ``.convergent-`` and ``.tmp``) may still be writing it: true while its pid
    lives, or when it is of another PID namespace (not known from here). A name without
    a pid (written before names had one) is a killed run's."""
    parts = middle.split(".")
    if len(parts) != 3:
        return False
    if int(parts[1], 16) != _pid_namespace():
        return True
    try:
        os.kill(int(parts[0], 16), 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it lives, as another user
        return True
    return True


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
        write_all(fd, data)
        if not direct or os.fstat(fd).st_mode & 0o7777 != final:
            os.fchmod(fd, final)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=at.fd)
        raise
    return fd, temp


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than it is given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
    ``trusted.convergent`` attribute only root can set), and made by a process that is
    gone (the name holds its pid): neither this process's nor another live agent's (two
    agents writing in one directory, hosts sharing a file system). A look-alike made by
    another user is left alone.
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
            if _writer_lives(name.rpartition(".convergent-")[2][:-4]):
                continue
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
        if not all(
            part and all(c in "0123456789abcdef" for c in part) for part in middle.split(".")
        ):
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
