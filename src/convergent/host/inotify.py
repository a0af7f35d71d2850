"""The inotify descriptor, bound through :mod:`convergent.host.libc`: its flags, the
watch mask a watched directory gets, and :class:`Inotify` (init, add and remove a
watch, close without waiting for the kernel).

Not asyncinotify: importing it costs ~13 ms here (it imports ``ctypes.util`` and runs
``find_library``, which spawns ldconfig) against ~3 ms for ctypes alone (~1 ms for its
C core and the types bound here), and its reader builds a ``Path``, an ``IntFlag`` and
an ``Event`` per record: 6.5-8 us per event against 0.9 us for
:mod:`convergent.resources.fswatch`'s parse of the records that ``Inotify.unpack``
reads.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_EXCL_UNLINK",
    "IN_IGNORED",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MOVE_SELF",
    "IN_ONLYDIR",
    "IN_Q_OVERFLOW",
    "IN_UNMOUNT",
    "MASK",
    "Inotify",
]

# From <sys/inotify.h>.
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000

#: What a watched directory reports: any change of an entry, and the directory's own end.
MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
_CLOSE_DELAY = 0.002  # seconds between removing the last watches and closing (see close)


def _close_after(fd: int, delay: float) -> None:
    time.sleep(delay)
    os.close(fd)


class Inotify:
    """The inotify descriptor: non-blocking, close-on-exec."""

    __slots__ = ("_add", "_errno", "_rm", "fd", "unpack")

    def __init__(self) -> None:
        import struct

        from convergent.host import libc

        init = libc.function("inotify_init1", libc.c_int, libc.c_int)
        add = (libc.c_int, libc.c_char_p, libc.c_uint32)
        self._add: Any = libc.function("inotify_add_watch", libc.c_int, *add)
        self._rm: Any = libc.function("inotify_rm_watch", libc.c_int, libc.c_int, libc.c_int)
        # struct inotify_event: int wd; uint32_t mask, cookie, len; char name[len].
        self.unpack = struct.Struct("iIII").unpack_from
        fd: int = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            code = libc.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd = fd
        self._errno: Callable[[], int] = libc.get_errno

    def add_watch(self, path: str) -> int:
        wd: int = self._add(self.fd, os.fsencode(path), MASK)
        if wd < 0:
            code = self._errno()
            if code == errno.ENOSPC:
                raise OSError(
                    code,
                    "inotify watch limit reached; raise it with "
                    "sysctl fs.inotify.max_user_watches=N",
                    path,
                )
            raise OSError(code, os.strerror(code), path)
        return wd

    def rm_watch(self, wd: int) -> None:
        self._rm(self.fd, wd)  # fails only when the kernel already removed it: fine

    def close(self, watches: Iterable[int]) -> None:
        """Remove ``watches`` (those still held), then close the descriptor, without
        waiting for the kernel to free them.

        Closing an inotify descriptor that holds watches, or whose watches were removed
        just before, waits for an SRCU grace period while the kernel frees them: 8-16 ms
        measured here, on the exit path of every run. Removing the watches first and
        closing ~2 ms later costs ~0.1 ms, so a short-lived thread closes it meanwhile.
        """
        for wd in watches:
            self._rm(self.fd, wd)
        import threading

        threading.Thread(
            target=_close_after, args=(self.fd, _CLOSE_DELAY), name="inotify close", daemon=True
        ).start()
