"""The files the ``process`` kind keeps under the state directory: pidfiles and logs.

``STATE_DIR/processes/`` (mode 0700, owned by the agent) holds, per ``process``
resource, a record ``KEY.json`` and its output ``KEY.log`` (with ``KEY.log.1``, the
part before the last rotation), all mode 0600; ``KEY`` is a hash of the resource's name.
The process writes its output to a pipe; the log's keeper (:mod:`convergent.host.logkeeper`,
started with it, outliving the agent as it does) writes the log and rotates it.

A record names the boot, the process's PID and its start time (clock ticks after boot,
field 22 of ``/proc/PID/stat``), a random token that is also in the process's
environment (``CONVERGENT_PROCESS``), and a fingerprint of what it was started with.
PID and start time together name one process of one boot: a PID reused by another
process has another start time and is never taken for ours. A record with PID 0 is an
intent, written before the spawn: if the agent dies before it records the PID, the next
one finds the process by its token.

Records are written atomically (a private temp file in the same directory, fsync,
rename; the temp files a killed agent left are removed at the next write); the
directory is not fsynced, because a record has to outlive the agent, not
the machine (after a reboot the boot id differs and no recorded process runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import msgspec

from convergent.host.children import DEAD, Stat, boot_id, pids, stat

__all__ = [
    "LOG_LIMIT",
    "TOKEN",
    "Record",
    "Store",
    "boot_id",
    "carries",
    "find_by_token",
    "live",
]

TOKEN = "CONVERGENT_PROCESS"  # in the environment of a managed process: its token
LOG_LIMIT = 1024 * 1024  # bytes a log holds before it is rotated (one older part kept)
_READ_MAX = 65536


class Record(msgspec.Struct, frozen=True):
    owner: str  # process[name]
    boot: str
    token: str
    fingerprint: str
    pid: int = 0  # 0: the spawn is under way (an intent)
    start: int = 0


def live(pid: int, start: int) -> Stat | None:
    """What /proc says of ``pid`` when it is the process that started at ``start``.

    It must also lead its own session, as every process this kind starts does: a PID
    reused within the same clock tick (start times count 1/100 s) by a process that does
    not is never taken for ours.
    """
    if pid <= 0:
        return None
    st = stat(pid)
    if st is None or st.start != start or st.session != pid or st.state in DEAD:
        return None
    return st


def carries(pid: int, token: str) -> bool:
    """True when the environment of ``pid`` holds ``CONVERGENT_PROCESS=token``."""
    from convergent.host import children

    return children.carries(pid, token, TOKEN)


def find_by_token(token: str) -> tuple[int, Stat] | None:
    """The session leader carrying ``token`` (a spawn whose PID was never recorded)."""
    for pid in pids():
        st = stat(pid)
        if st is None or st.session != pid or st.state in DEAD:
            continue
        if carries(pid, token):
            return pid, st
    return None


class Store:
    """The ``processes`` directory of one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "processes")

    @staticmethod
    def key(owner: str) -> str:
        return hashlib.sha256(owner.encode()).hexdigest()[:32]

    def log_path(self, owner: str) -> str:
        return os.path.join(self.path, self.key(owner) + ".log")

    def _open_dir(self, create: bool) -> int | None:
        """The directory, opened without following a symlink (made 0700 when ``create``)."""
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path, 0o700)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                raise PermissionError(1, "is owned by another user; remove it", self.path)
            if create and st.st_mode & 0o7777 != 0o700:
                os.fchmod(fd, 0o700)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, owner: str) -> Record | None:
        """The record of ``owner`` (None: none, unreadable, or another boot's)."""
        try:
            dfd = self._open_dir(create=False)
        except OSError:
            return None
        if dfd is None:
            return None
        try:
            fd = os.open(
                self.key(owner) + ".json",
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=dfd,
            )
        except OSError:
            return None
        finally:
            os.close(dfd)
        try:
            record = msgspec.json.decode(os.read(fd, _READ_MAX), type=Record)
        except (OSError, msgspec.DecodeError):
            return None
        finally:
            os.close(fd)
        if record.boot != boot_id() or record.owner != owner:
            return None
        return record

    def write(self, record: Record) -> None:
        """Replace the record of ``record.owner`` atomically (temp, fsync, rename)."""
        dfd = self._open_dir(create=True)
        assert dfd is not None
        name = self.key(record.owner) + ".json"
        temp = f".{name}.{os.getpid()}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            _sweep(dfd, f".{name}.")  # left by a killed agent (one agent per state dir)
            fd = os.open(temp, flags, 0o600, dir_fd=dfd)
            try:
                os.write(fd, msgspec.json.encode(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dfd)
            raise
        finally:
            os.close(dfd)

    def remove(self, owner: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.path, self.key(owner) + ".json"))

    def keep_log(self, owner: str) -> tuple[int, int]:
        """The writing end of a pipe whose keeper (:mod:`convergent.host.logkeeper`)
        appends to the log of ``owner`` (created 0600) and rotates it, and the keeper's
        PID (the caller's child, to reap once it ends)."""
        from convergent.host import logkeeper

        dfd = self._open_dir(create=True)
        assert dfd is not None
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.key(owner) + ".log", flags | os.O_NONBLOCK, 0o600, dir_fd=dfd)
            try:
                if not _regular(fd):
                    raise IsADirectoryError(21, "is not a regular file", self.log_path(owner))
                os.set_blocking(fd, True)
                return logkeeper.start(dfd, fd, self.key(owner) + ".log", LOG_LIMIT)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)


def _sweep(dfd: int, prefix: str) -> None:
    """Remove ``PREFIX<pid>.tmp`` files in ``dfd``: temp files of a killed agent (only
    the agent holding the state directory's lock writes there)."""
    for entry in os.listdir(dfd):
        middle = entry[len(prefix) : -4]
        if entry.startswith(prefix) and entry.endswith(".tmp") and middle.isdigit():
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=dfd)


def _regular(fd: int) -> bool:
    import stat as stat_module

    return stat_module.S_ISREG(os.fstat(fd).st_mode)
