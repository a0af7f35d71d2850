"""Which file a name holds, told apart from a file that took over its inode number.

ext4 (and overlayfs on it) gives the number of a freed inode to the next file created
(measured here: a file renamed over another, then one more file made, got the freed
number 20 times out of 20), so ``(st_dev, st_ino)`` can name two files one after the
other. A file handle
(``name_to_handle_at(2)``) also holds the inode's generation, which changes each time
the number is used again: :func:`of_fd` and :func:`of_path` return it with the mount's
id, as bytes to compare. A file system without file handles (overlayfs without
``nfs_export``, procfs) or a kernel that refuses the call (a seccomp filter) gets
``(st_dev, st_ino)`` instead: :func:`unique` says which, and a caller that must not take
a later file for this one keeps this one from being freed meanwhile (an ``O_PATH``
descriptor: a number in use is not given again). Both are read only: nothing is
opened, a symlink is not followed.
"""

from __future__ import annotations

import os
import struct
from typing import Any

__all__ = ["of_fd", "of_path", "unique"]

_AT_EMPTY_PATH = 0x1000
_AT_FDCWD = -100
_MAX_HANDLE_SZ = 128
_pack = struct.Struct("ii").pack
# [name_to_handle_at, its struct file_handle type, c_int], or Nones: not available
_calls: list[Any] = []


def of_fd(fd: int) -> bytes:
    """The identity of the open file ``fd``."""
    found = _handle(fd, b"", _AT_EMPTY_PATH)
    if found is not None:
        return found
    st = os.fstat(fd)
    return _inode(st.st_dev, st.st_ino)


def of_path(path: str) -> bytes | None:
    """The identity of what the absolute ``path`` names (a symlink there: the link
    itself), or None when nothing is there."""
    found = _handle(_AT_FDCWD, os.fsencode(path), 0)
    if found is not None:
        return found
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return _inode(st.st_dev, st.st_ino)


def unique(identity: bytes) -> bool:
    """Whether ``identity`` names its file alone (a file handle); False: only its device
    and inode number, which name a later file too once this one is freed."""
    return not identity.startswith(b"i")


def _inode(dev: int, ino: int) -> bytes:
    return b"i" + struct.pack("QQ", dev, ino)


def _handle(dir_fd: int, name: bytes, flags: int) -> bytes | None:
    """``name_to_handle_at`` as bytes (the mount id, the handle's type and the handle),
    None when there is none (no such file, or no file handles: the caller falls back)."""
    if not _calls:
        _load()
    call, handle_type, c_int = _calls
    if call is None:
        return None
    handle = handle_type()
    handle.handle_bytes = _MAX_HANDLE_SZ
    mount = c_int()
    if call(dir_fd, name, handle, mount, flags) != 0:
        return None
    size = handle.handle_bytes
    return _pack(mount.value, handle.handle_type) + bytes(handle.f_handle[:size])


def _load() -> None:
    from convergent.host import libc

    class Handle(libc.Structure):
        _fields_ = (
            ("handle_bytes", libc.c_uint32),
            ("handle_type", libc.c_int),
            ("f_handle", libc.c_ubyte * _MAX_HANDLE_SZ),
        )

    args = (libc.c_int, libc.c_char_p, libc.POINTER(Handle), libc.POINTER(libc.c_int), libc.c_int)
    try:
        call = libc.function("name_to_handle_at", libc.c_int, *args)
    except AttributeError:
        _calls.extend((None, None, None))
        return
    _calls.extend((call, Handle, libc.c_int))
