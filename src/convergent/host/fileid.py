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
_header = struct.Struct("=Ii")  # struct file_handle's handle_bytes and handle_type
_HEADER = _header.size
# [name_to_handle_at, a buffer type of struct file_handle's size, c_int, byref], or
# Nones: not available
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
    call, buffer_type, c_int, byref = _calls
    if call is None:
        return None
    handle = buffer_type()  # struct file_handle: u32 handle_bytes; int handle_type; data
    _header.pack_into(handle, 0, _MAX_HANDLE_SZ, 0)
    mount = c_int()
    if call(dir_fd, name, handle, byref(mount), flags) != 0:
        return None
    size, kind = _header.unpack_from(handle, 0)
    return _pack(mount.value, kind) + bytes(handle)[_HEADER : _HEADER + size]


def _load() -> None:
    from convergent.host import libc

    args = (libc.c_int, libc.c_char_p, libc.c_void_p, libc.c_void_p, libc.c_int)
    try:
        call = libc.function("name_to_handle_at", libc.c_int, *args)
    except AttributeError:  # an old C library: no file handles
        _calls.extend((None, None, None, None))
        return
    buffer_type = libc.c_ubyte * (_HEADER + _MAX_HANDLE_SZ)
    _calls.extend((call, buffer_type, libc.c_int, libc.byref))
