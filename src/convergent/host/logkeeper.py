"""The keeper of a ``process`` log: reads the process's output from a pipe and writes it
to its log, which it rotates, whether or not an agent runs.

A ``process`` outlives the agent that started it, so its log cannot be capped by the
agent: a process writing straight into its file would fill the disk after a one-shot
run. The process writes to a pipe instead; its reading end goes to a keeper started
beside the process (:func:`start`), in a session of its own and without the death
signal, so it outlives the agent as the process does, and ends when the pipe's last
writer is gone: the process, whatever of its children kept its output, and the agent,
which holds a writing end while it runs so that a restart's process writes to the same
keeper (``resources/process.py``).

The keeper is this module's :func:`main` in the agent's interpreter (``python -I -S``:
only the standard library's ``os``, ``fcntl``, ``stat`` and ``sys``; ~9 MiB resident).
It is given:

- fd 0: the pipe's reading end; fd 3: the log's directory (the state directory's
  ``processes``, opened by the agent without following a symlink); fd 4: the log,
  opened by the agent for appending (``O_NOFOLLOW``, a regular file: a log the agent
  cannot open fails the start, not the keeper); stdout and stderr: ``/dev/null``;
- the log's name in that directory and the limit in bytes.

It writes each read to the log. When a write would take the log past the limit, it
writes what fits (up to the last line end in it, when there is one), renames the log to
``NAME.1`` (the older part, replaced) and goes on in a new, empty ``NAME``. Two keepers
may write one log (a restart whose old process left a child holding the old pipe): a
rotation is made under a lock of the directory (``flock``), by the keeper whose file the
name still holds; the other opens the new file; while two keepers write at once the log
may pass the limit by one read (``CHUNK``) at most. The new file is made before the
renames: a log that cannot be rotated (its directory removed, no inode left) is emptied
instead, and ``NAME.1`` is kept. A write that fails (a full disk) drops its bytes, and
the keeper reads on.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys

__all__ = ["CHUNK", "DIR_FD", "LOG_FD", "keep", "main", "start"]

CHUNK = 65536  # bytes read at a time (a pipe's default capacity)
DIR_FD = 3  # the log's directory, in the keeper
LOG_FD = 4  # the log as the agent opened it
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from convergent.host.logkeeper import main; import os; os._exit(main(sys.argv[2:]))"
)
_OPEN = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Log:
    """The log file a keeper writes: its descriptor and what the file holds."""

    def __init__(self, dfd: int, name: str, limit: int, fd: int) -> None:
        self.dfd, self.name, self.limit, self.fd = dfd, name, limit, fd

    def _open(self, name: str, flags: int = 0) -> int:
        fd = os.open(name, _OPEN | flags, 0o600, dir_fd=self.dfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(21, "the log is not a regular file", name)
        os.set_blocking(fd, True)
        return fd

    def _switch(self, fd: int) -> None:
        os.close(self.fd)
        self.fd = fd

    def write(self, data: bytes) -> None:
        """Append ``data``; each time the log is full, rotate it and go on in the new one."""
        while True:
            room = self.limit - os.fstat(self.fd).st_size
            if len(data) <= room:
                self._write_all(data)
                return
            part = data[: max(room, 0)]  # what fits, up to its last line end if it has one
            end = part.rfind(b"\n") + 1
            self._write_all(part[:end] if end else part)
            data = data[end or len(part) :]
            self._rotate()
            if os.fstat(self.fd).st_size >= self.limit:  # neither rotated nor emptied
                return  # the rest is dropped rather than the limit passed

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except InterruptedError:
                continue
            except OSError:  # a full disk, a quota: these bytes are dropped
                return

    def _rotate(self) -> None:
        """``NAME`` -> ``NAME.1`` and a new ``NAME``, once among the keepers of this log.
        The new file is made first (as ``.NAME.new``): when it cannot be (no inode left,
        the directory gone), nothing is renamed, and the full file is emptied instead."""
        fcntl.flock(self.dfd, fcntl.LOCK_EX)
        try:
            mine = os.fstat(self.fd)
            try:
                named = os.stat(self.name, dir_fd=self.dfd, follow_symlinks=False)
            except FileNotFoundError:
                named = None
            if named is None or (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
                self._switch(self._open(self.name))  # another keeper's rotation made it
                return
            temp = f".{self.name}.new"  # a killed keeper's is replaced (under the lock)
            self._unlink(temp)
            new = self._open(temp, os.O_EXCL)
            try:
                os.rename(self.name, self.name + ".1", src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
                os.rename(temp, self.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
            except OSError:
                os.close(new)
                self._unlink(temp)
                raise
            self._switch(new)
        except OSError:  # cannot rotate: stay capped
            self._empty()
        finally:
            fcntl.flock(self.dfd, fcntl.LOCK_UN)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.dfd)
        except OSError:
            return  # none there (or the directory is gone: the open that follows says so)

    def _empty(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            return  # then write() drops what does not fit


def keep(source: int, dfd: int, name: str, limit: int, fd: int) -> None:
    """Copy ``source`` to the log ``name`` in ``dfd`` (open as ``fd``) until the pipe's
    last writer is gone."""
    log = _Log(dfd, name, limit, fd)
    while True:
        try:
            data = os.read(source, CHUNK)
        except InterruptedError:
            continue
        if not data:
            return
        log.write(data)


def start(dfd: int, log: int, name: str, limit: int) -> tuple[int, int]:
    """Start the keeper of the log ``name`` in the directory ``dfd``, open as ``log``:
    the writing end of its pipe (for the process's stdout and stderr; the caller closes
    it) and the keeper's PID (the caller's child: reap it once it ends).

    Started with ``posix_spawn`` (no fork of the agent), in a session of its own, with
    an empty environment, no signal blocked and SIGINT, SIGTERM, SIGHUP and SIGQUIT at
    their defaults; it keeps only its three descriptors and ``/dev/null`` (it closes the
    others the agent was given without close-on-exec first). Raises OSError when it
    cannot be started."""
    import signal

    if not sys.executable:
        raise OSError(2, "no Python interpreter to start the log's keeper with", "sys.executable")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    argv = [sys.executable, "-I", "-S", "-c", _BOOT, root, name, str(limit)]
    read, write = os.pipe2(os.O_CLOEXEC)
    copies: list[int] = []
    try:
        # Copies above the targets first, so that no dup2 overwrites a source still to be
        # copied (the pipe or the log may be fd 3 or 4 here); they close at the exec.
        for fd in (read, dfd, log):
            copies.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        actions = [
            (os.POSIX_SPAWN_DUP2, copies[0], 0),
            (os.POSIX_SPAWN_DUP2, copies[1], DIR_FD),
            (os.POSIX_SPAWN_DUP2, copies[2], LOG_FD),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        defaults = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
        pid = os.posix_spawn(
            argv[0], argv, {}, file_actions=actions, setsid=True, setsigmask=(), setsigdef=defaults
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
        for fd in copies:
            os.close(fd)
    return write, pid


def _close_inherited() -> None:
    """Close what the agent was given without close-on-exec (and so passed on): the open
    descriptors past the log's, as ``/proc`` lists them (``closerange`` to 2**31 would
    close each number in turn where the kernel has no ``close_range``)."""
    try:
        opened = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every number up to the limit (close_range where it can)
        os.closerange(LOG_FD + 1, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in opened:
        if fd > LOG_FD:
            try:
                os.close(fd)
            except OSError:
                continue  # listdir's own, closed already


def main(argv: list[str]) -> int:
    """``NAME LIMIT``, with the pipe on fd 0, the directory on fd 3 and the log on fd 4."""
    name, limit = argv[0], int(argv[1])
    if "/" in name or name in ("", ".", "..") or limit <= 0:
        return 2
    _close_inherited()
    os.chdir("/")  # holds no mount of the agent's working directory
    try:
        keep(0, DIR_FD, name, limit, LOG_FD)
    except OSError:
        return 1
    return 0
