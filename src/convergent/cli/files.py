"""Writing the files the command line itself installs (a unit file, a schema, a man page).

One helper: :func:`write_text` writes a whole file atomically, so a reader (systemd, an
editor) sees the old file or the new one, never half of one. The private temporary file
is created next to the target with ``O_EXCL | O_NOFOLLOW`` and its final mode from the
start, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["write_text"]


def write_text(path: str, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` by a file holding ``text`` (UTF-8) with permission bits ``mode``.

    The directory must exist. A symlink at ``path`` is replaced, not followed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            data = text.encode("utf-8")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
