"""The files repairs replace, held across their renames and freed after them
(:class:`Holds`, used by :class:`convergent.host.commits.Commits`).

A rename over a file frees that file (its inode, its blocks) inside the ``rename``
call, before the new name is in place: ~180 us on the test machine's ext4
(docs/performance.md). With an ``O_PATH`` descriptor of the old file open across the
rename, the freeing happens when that descriptor is closed, which the sync thread does
while the event loop goes on. ``O_PATH|O_NOFOLLOW`` opens nothing for real: a FIFO, a
device or a symlink at the name is neither opened, blocked on nor followed.

Held only where it pays and costs nothing else:

- on a local file system (ext2/3/4, xfs, btrfs, tmpfs, from ``/proc/self/mountinfo``,
  read once per device): NFS renames a file that is still open to ``.nfsXXXX`` instead;
- at most :data:`MAX_HELD` at a time (a busy sync thread does not pile descriptors up,
  nor keep much freed space from coming back);
- when the sync thread cannot take them (no thread could be started), closed at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    Later = Callable[[Callable[[], None]], None]  # runs a job in the sync thread, later

__all__ = ["LOCAL", "MAX_HELD", "Holds"]

MAX_HELD = 16  # descriptors held and not closed yet, at most
LOCAL = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs"})
_HOLD = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class Holds:
    """The replaced files of one run's repairs: :meth:`hold` before a rename,
    :meth:`release` after it."""

    __slots__ = ("_local", "_out")

    def __init__(self) -> None:
        self._local: dict[int, bool] = {}  # device -> whether holding is done there
        # one entry per descriptor not closed yet: a deque, as the loop appends and the
        # sync thread pops (each atomic; an int's += between two threads is not)
        self._out: deque[None] = deque()

    @property
    def pending(self) -> bool:
        """Whether descriptors are held that no one has closed yet."""
        return bool(self._out)

    def hold(self, name: str, dir_fd: int, dev: int) -> int:
        """An ``O_PATH`` descriptor of what is at ``name`` (one path component) in
        ``dir_fd`` (on device ``dev``), or -1: nothing there, not a local file system, or
        enough held. Opened through the directory's descriptor with ``O_NOFOLLOW``: a
        symlink there is held itself, never followed.

        Nothing is done with the descriptor but its close: when the name is swapped
        between this open and the rename, the file held is simply not the one replaced
        (the rename frees that one, as without a hold)."""
        local = self._local.get(dev)
        if local is False or len(self._out) >= MAX_HELD:
            return -1
        try:
            fd = os.open(name, _HOLD, dir_fd=dir_fd)
        except OSError:
            return -1
        if local is None:  # the first file held on this device: is it local?
            local = self._local[dev] = _fs_type(dev) in LOCAL
            if not local:
                os.close(fd)
                return -1
        self._out.append(None)
        return fd

    def release(self, fds: list[int], later: Later) -> None:
        """Close ``fds`` (from :meth:`hold`, their renames done) in the sync thread
        through ``later``; here and now when it cannot take them."""
        if not fds:
            return
        try:
            later(functools.partial(self.drop, fds))
        except Exception:  # no sync thread (a process or thread limit): closed here
            self.drop(fds)
        except BaseException:
            self.drop(fds)
            raise

    def drop(self, fds: list[int]) -> None:
        """Close ``fds`` (from :meth:`hold`) now, in whatever thread calls this."""
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._out.pop()


def _fs_type(dev: int) -> str:
    """The file system type of the device ``dev`` (st_dev), "" when not found."""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(" ", 3)
                if len(fields) > 2 and fields[2] == wanted:
                    _, sep, tail = line.partition(" - ")
                    return tail.split(" ", 1)[0] if sep else ""
    except OSError:
        pass
    return ""
