"""The order in which names are deleted from (or renamed into) directories, as inotify
tells it."""

from __future__ import annotations

import ctypes
import os
import select
import struct

__all__ = ["Arrivals", "Deletions"]

_IN_DELETE = 0x00000200
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")


class Deletions:
    """Every name deleted from ``directories`` from now on, in the kernel's order."""

    MASK = _IN_DELETE

    def __init__(self, *directories: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.dirs: dict[int, str] = {}
        for directory in directories:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(directory), self.MASK)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self.dirs[wd] = directory
        self.names: list[str] = []

    def read(self, count: int, bound: float = 10.0) -> list[str]:
        """The paths deleted, once ``count`` of them were (at most ``bound`` s of waiting)."""
        while len(self.names) < count:
            if not select.select([self.fd], [], [], bound)[0]:
                break
            data = os.read(self.fd, 65536)
            at = 0
            while at < len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, at)
                name = data[at + _HEADER.size : at + _HEADER.size + size].rstrip(b"\0")
                if mask & self.MASK and name:  # not IN_IGNORED (a watched directory gone)
                    self.names.append(f"{self.dirs[wd]}/{name.decode()}")
                at += _HEADER.size + size
        return self.names

    def close(self) -> None:
        os.close(self.fd)


class Arrivals(Deletions):
    """Every name renamed into ``directories`` (an atomic write's last step), in order."""

    MASK = _IN_MOVED_TO
