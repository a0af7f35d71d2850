"""The start-up cache's file (:mod:`convergent.cli.codecache`): its layout, what goes in
it, and how it is written.

Layout: :data:`MAGIC`, the length of the head (4 bytes, little-endian), the head (a
``marshal`` of the key and ``sys.path`` marks it was written for, and the index: module
name -> :data:`Entry`), then each module's compiled code (a ``marshal`` of its code
object, as a ``.pyc`` holds it after its 16-byte header), at the entry's offset from the
end of the head.

Written as a ``.pyc`` is (a new file beside it, then renamed over it), but synced before
the rename (a crash leaves the old file or the new one, whole) and mode 0600: the code
of every module a command imported goes in, and some came from files other users may
not read.
"""

from __future__ import annotations

import marshal
import os
import stat
import time
from _frozen_importlib_external import MAGIC_NUMBER, cache_from_source

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["MAGIC", "MAX_BYTES", "Entry", "compiled", "open_trusted", "parse", "write"]

MAGIC = b"convergent startup cache 2\n"
MAX_BYTES = 64 * 1024 * 1024  # more is not a cache of one command's modules
_KEEP_FILES = 8  # startup files in one __pycache__ (one a key): the oldest go past this
_TEMP_AGE_NS = 600 * 10**9  # a temp file this old is a killed writer's

# name -> (origin, is a package, inode, mtime ns, size, offset, length, cached .pyc,
#          the mtime ns of the directory it is in)
Entry = tuple[str, bool, int, int, int, int, int, str, int]


def compiled(module: ModuleType, loaders: tuple[type, ...]) -> tuple[Entry, bytes] | None:
    """A module imported from source by one of ``loaders``, with its compiled code: its
    ``.pyc``'s when that ``.pyc`` was written after its source last changed (ctime) and
    its header names the source as it is now; else compiled here from the source (a
    ``.pyc`` that Python takes for its source's, by seconds and size, may be an older
    version's: it is not copied, so not kept past an edit). None for a module whose
    ``.pyc`` is hash-based (Python checks it against the source's bytes, or not at all)."""
    spec = getattr(module, "__spec__", None)
    if spec is None or not spec.has_location or type(spec.loader) not in loaders:
        return None
    origin = spec.origin
    if not isinstance(origin, str) or not origin.endswith(".py") or not os.path.isabs(origin):
        return None
    try:
        cached = cache_from_source(origin)
        where = os.stat(os.path.dirname(origin)).st_mtime_ns
        with open(origin, "rb") as source:
            info = os.fstat(source.fileno())
            hashed, code = _from_pyc(cached, info)
            if hashed:
                return None
            if code is None:
                code = marshal.dumps(compile(source.read(), origin, "exec", dont_inherit=True))
    except (OSError, ValueError, NotImplementedError, SyntaxError):
        return None
    package = spec.submodule_search_locations is not None
    return (origin, package, info.st_ino, info.st_mtime_ns, info.st_size, 0, 0, cached, where), code


def _from_pyc(cached: str, source: os.stat_result) -> tuple[bool, bytes | None]:
    """Whether the ``.pyc`` ``cached`` is hash-based (Python checks it against the
    source's bytes, or not at all: such a module is left to it), and its code if it is
    certainly ``source``'s (else None)."""
    try:
        with open(cached, "rb") as file:
            written = os.fstat(file.fileno()).st_mtime_ns
            data = file.read()
    except OSError:
        return False, None
    if len(data) >= 16 and data[:4] == MAGIC_NUMBER and data[4:8] != bytes(4):
        return True, None
    if (
        written <= source.st_ctime_ns  # the source changed since (or in the same tick)
        or len(data) < 16
        or data[:4] != MAGIC_NUMBER
        or int.from_bytes(data[8:12], "little") != int(source.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(data[12:16], "little") != source.st_size & 0xFFFFFFFF
    ):
        return False, None
    return False, data[16:]


def parse(data: bytes) -> tuple[tuple[object, ...], int, dict[str, Entry]] | None:
    """The head, where the compiled code begins and the index of a file that begins with
    ``data`` (None: not a cache file, or ``data`` is too short to hold the index)."""
    start = len(MAGIC) + 4
    if len(data) < start or not data.startswith(MAGIC):
        return None
    end = start + int.from_bytes(data[len(MAGIC) : start], "little")
    if end > len(data):
        return None
    try:
        head, index = marshal.loads(data[start:end])
    except Exception:  # anything amiss is no cache
        return None
    if type(head) is not tuple or type(index) is not dict:
        return None
    for entry in index.values():
        if type(entry) is not tuple or len(entry) != 9:
            return None
    return head, end, index


def open_trusted(path: str) -> int | None:
    """The file ``path``, opened, if it is a regular file of this user or root that
    nobody else may write and not too large; no symlink is followed, no FIFO waited on."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if (
        not stat.S_ISREG(info.st_mode)
        or info.st_uid not in (0, os.geteuid())
        or info.st_mode & 0o022
        or info.st_size > MAX_BYTES
    ):
        os.close(fd)
        return None
    return fd


def write(path: str, head: tuple[object, ...], entries: dict[str, tuple[Entry, bytes]]) -> None:
    """Write a cache file for ``head`` (key and ``sys.path`` marks) holding ``entries``
    (each module's entry and compiled code; the offsets are made here)."""
    pieces: list[bytes] = []
    index: dict[str, Entry] = {}
    offset = 0  # from the end of the head
    for name, (entry, data) in entries.items():
        pieces.append(data)
        index[name] = (*entry[:5], offset, len(data), *entry[7:])
        offset += len(data)
    packed = marshal.dumps((head, index))  # type: ignore[arg-type]  # object: marshallable
    if len(MAGIC) + 4 + len(packed) + offset > MAX_BYTES:
        return
    _replace(path, [MAGIC, len(packed).to_bytes(4, "little"), packed, *pieces])


def _replace(path: str, pieces: list[bytes]) -> None:
    """Write ``pieces`` to a new file beside ``path``, sync it, rename it over ``path``."""
    from convergent.host.atomic import write_all  # at the command's end only: not at start

    directory, name = os.path.split(path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sweep(dir_fd, name)
        temp = f"{name}.{os.getpid()}-{os.urandom(6).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
        try:
            try:
                for piece in pieces:
                    write_all(fd, piece)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temp, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _sweep(dir_fd: int, name: str) -> None:
    """Remove what other writers left in the directory: their temp files once old (a
    writer killed before its rename), and the oldest cache files past
    :data:`_KEEP_FILES` (one is written for each ``sys.path`` that runs convergent)."""
    now = time.time_ns()
    kept: list[tuple[int, str]] = []
    prefix = name.partition("-")[0] + "-"  # startup.TAG-
    for other in os.listdir(dir_fd):
        if not other.startswith(prefix) or other == name:
            continue
        try:
            info = os.stat(other, dir_fd=dir_fd, follow_symlinks=False)
            if other.endswith(".tmp"):
                if now - info.st_mtime_ns > _TEMP_AGE_NS:
                    os.unlink(other, dir_fd=dir_fd)
            elif other.endswith(".bin"):
                kept.append((info.st_mtime_ns, other))
        except OSError:
            continue
    kept.sort()
    for _, other in kept[: max(0, len(kept) + 1 - _KEEP_FILES)]:
        try:
            os.unlink(other, dir_fd=dir_fd)
        except OSError:
            continue
