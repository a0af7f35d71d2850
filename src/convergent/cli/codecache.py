"""The compiled modules of a run kept in one file: what ``import`` finds without a search.

Each module a ``convergent`` command imports from source costs the import system ~80 us
here before its code runs (the search along ``sys.path``, the ``.pyc`` opened, read and
checked against its source): ~170 modules a run (asyncio's, msgspec's, convergent's),
about a tenth of a ten-file run. :func:`install` puts a finder first on ``sys.meta_path``
that answers from one file, ``__pycache__/startup.<tag>-<key>.bin`` beside convergent's
own ``.pyc`` files: each module's compiled code as its ``.pyc`` holds it, read with one
``pread``. :meth:`CodeCache.save` writes it when the command ends, from the ``.pyc``
files the import system wrote or checked, when this run imported a module the file did
not hold or held in an older version.

What a module from the file is, and when it is not used:

- It is the module a plain import makes: the same ``__spec__`` (origin, ``cached``,
  ``submodule_search_locations``), ``__file__``, ``__cached__`` and ``__path__``; its
  loader is a :class:`~importlib.machinery.SourceFileLoader` (``get_source``,
  ``inspect``, tracebacks read the ``.py`` file) that takes the code from the file, or
  from the ``.pyc`` as usual if the file cannot be read.
- A module is taken from the file only while its source is the one whose ``.pyc`` was
  kept: the same inode, size and modification time (ns), checked with a ``stat`` at each
  import (Python's own check of a ``.pyc`` compares seconds and size). An edited module
  is imported as usual, and the next save keeps its new code.
- The file is for one ``sys.path`` but its first directory (the script's, or the
  working directory of ``python -m``), one interpreter and one optimisation level (its
  name holds a digest of them). It is not used at all when another directory on
  ``sys.path`` changed (its inode or modification time: a file added there could now
  come first), nor when the first one holds a module named as one it keeps from
  elsewhere; a top-level module is taken from it only if it was found in a directory
  that is on ``sys.path`` now, a submodule only if it is in its package's ``__path__``.
- It is read only when it is a regular file (no symlink followed, no FIFO waited on)
  owned by this user or root and writable by nobody else, as the ``.pyc`` files beside
  it are trusted. It is written as they are: not with ``-B`` or
  ``PYTHONDONTWRITEBYTECODE``, and only where this user may write; into a new file,
  synced, then renamed over the old one (a crash leaves the old file or the new one).
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
from _frozen_importlib import ModuleSpec
from _frozen_importlib_external import (
    MAGIC_NUMBER,
    SourceFileLoader,
    cache_from_source,
)

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from types import CodeType, ModuleType
    from typing import Any

__all__ = ["MAX_BYTES", "CodeCache", "Entry", "install", "read", "write"]

_MAGIC = b"convergent startup cache 1\n"
MAX_BYTES = 64 * 1024 * 1024  # more is not a cache of one command's modules
# Past this, a save keeps only what this command imported (not every module any command
# with this sys.path imported: a run's are ~2.5 MB, with the web view's and etcd's ~13).
_KEEP_BYTES = 16 * 1024 * 1024
_FIRST_READ = 64 * 1024  # the head (key and index) of a usual file, in one read

# name -> (origin, is a package, inode, mtime ns, size, offset, length, cached .pyc)
Entry = tuple[str, bool, int, int, int, int, int, str]


def _key() -> tuple[object, ...]:
    """What the file is for: the interpreter, its bytecode, and where imports look."""
    return (
        MAGIC_NUMBER,
        sys.version,
        sys.executable,
        sys.flags.optimize,
        sys.pycache_prefix,
        tuple(sys.path[1:]),  # the first (the script's directory) is looked at by _shadowed
        tuple(f"{type(f).__module__}.{type(f).__qualname__}" for f in sys.meta_path),
        tuple(f"{type(h).__module__}.{getattr(h, '__qualname__', '')}" for h in sys.path_hooks),
    )


def _where() -> tuple[tuple[int, int, int] | None, ...]:
    """The inode and modification time of each ``sys.path`` directory but the first
    (None: not there): a file added to one could now come first."""
    marks: list[tuple[int, int, int] | None] = []
    for entry in sys.path[1:]:
        try:
            info = os.stat(entry or ".")
        except (OSError, ValueError):
            marks.append(None)
        else:
            marks.append((info.st_dev, info.st_ino, info.st_mtime_ns))
    return tuple(marks)


def _shadowed(index: dict[str, Entry]) -> bool:
    """Whether the first ``sys.path`` directory (the script's, or the working directory
    of ``python -m``, which change often) holds a module, package or extension named as
    a top-level module the file keeps from elsewhere: the usual search would find it
    first."""
    if not sys.path:
        return False
    first = sys.path[0] or "."
    try:
        names = os.listdir(first)
    except (OSError, ValueError):
        return False
    here = os.path.abspath(first)
    for name in names:
        entry = index.get(name.partition(".")[0])
        if entry is None:
            continue
        found = os.path.dirname(entry[0])  # a module's directory, a package's parent
        if (os.path.dirname(found) if entry[1] else found) != here:
            return True
    return False


def _digest(text: str) -> str:
    """FNV-1a, 32 bits: a short name for a key (no hash module imported for it)."""
    value = 0x811C9DC5
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{value:08x}"


def _stamp(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_mtime_ns, info.st_size


class _Loader(SourceFileLoader):
    """A source module's loader whose code comes from the cache file."""

    def __init__(self, fullname: str, path: str, cache: CodeCache, entry: Entry) -> None:
        super().__init__(fullname, path)
        self._cache = cache
        self._entry = entry

    def get_code(self, fullname: str) -> CodeType | None:
        entry = self._entry
        if fullname == self.name:
            code = self._cache.code(fullname, entry)
            if code is not None:
                return code
        return super().get_code(fullname)


class CodeCache:
    """The finder over one cache file, and what this command imported around it."""

    def __init__(
        self,
        path: str,
        head: tuple[object, ...],
        fd: int | None,
        base: int,
        index: dict[str, Entry],
    ) -> None:
        self.path = path  # the cache file
        self._head = head  # key and sys.path marks this command writes
        self._fd = fd  # the file read, kept open for the modules imported later
        self._base = base  # where its compiled code begins
        self._index = index
        self._before = set(sys.modules)  # imported before the finder: never from it
        roots = [entry or os.getcwd() for entry in sys.path]  # as the path finder has them
        self._roots = {*roots, *map(os.path.abspath, roots)}
        self._stale: set[str] = set()  # kept in an older version than the source's
        self._served: set[str] = set()  # modules made from the file
        self._damaged = False  # some code in it could not be read: keep only what could

    # The finder (on sys.meta_path)
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        entry = self._index.get(name)
        if entry is None or target is not None:
            return None
        origin, package = entry[0], entry[1]
        where = os.path.dirname(origin)  # a module's directory, a package's own
        if path is None:  # a top-level module: from a directory on this sys.path only
            if (os.path.dirname(where) if package else where) not in self._roots:
                return None
        elif where not in path:
            return None  # its package came from elsewhere: the usual search decides
        try:
            info = os.stat(origin)
        except OSError:
            self._stale.add(name)
            return None
        if _stamp(info) != (entry[2], entry[3], entry[4]):
            self._stale.add(name)
            return None
        spec = ModuleSpec(
            name, _Loader(name, origin, self, entry), origin=origin, is_package=package
        )
        if package:
            spec.submodule_search_locations = [where]
        spec.has_location = True
        spec.cached = entry[7]
        return spec

    def invalidate_caches(self) -> None:
        """``importlib.invalidate_caches()``: nothing is cached beyond the stat checks."""

    def code(self, name: str, entry: Entry) -> CodeType | None:
        """The code kept for the module ``name``, or None when it cannot be read (the
        next save writes it again)."""
        code = None
        if self._fd is not None:
            try:
                data = os.pread(self._fd, entry[6], self._base + entry[5])
                if len(data) == entry[6]:
                    code = marshal.loads(data)
            except Exception:  # a damaged file is no cache: the .pyc is read instead
                code = None
        if type(code).__name__ != "code":
            self._stale.add(name)
            self._damaged = True
            return None
        self._served.add(name)
        return code

    @property
    def served(self) -> int:
        """How many modules were made from the file."""
        return len(self._served)

    # Writing
    def save(self) -> None:
        """Write the file again when this command imported a module it did not hold (or
        held in an older version); a failure (read-only, full) leaves it as it was."""
        if sys.dont_write_bytecode or not os.access(os.path.dirname(self.path), os.W_OK):
            return
        new: dict[str, tuple[Entry, bytes]] = {}
        for name, module in list(sys.modules.items()):
            if name in self._before or (name in self._index and name not in self._stale):
                continue
            found = _compiled(module)
            if found is not None:
                new[name] = found
        if not new and not self._stale:
            return
        try:
            self._write(new)
        except (OSError, ValueError, EOFError, TypeError):
            return  # the file as it was

    def _write(self, new: dict[str, tuple[Entry, bytes]]) -> None:
        entries: dict[str, tuple[Entry, bytes]] = {}
        for name, entry in self._index.items():
            if name in new or name in self._stale or self._fd is None:
                continue
            if self._damaged and name not in self._served:
                continue
            data = os.pread(self._fd, entry[6], self._base + entry[5])
            if len(data) == entry[6]:
                entries[name] = entry, data
        if sum(len(code) for _, code in (*entries.values(), *new.values())) > _KEEP_BYTES:
            entries = {name: kept for name, kept in entries.items() if name in self._served}
        entries.update(new)
        write(self.path, self._head, entries)


def write(path: str, head: tuple[object, ...], entries: dict[str, tuple[Entry, bytes]]) -> None:
    """Write a cache file for ``head`` (key and ``sys.path`` marks) holding ``entries``
    (each module's entry and compiled code; the offsets are made here)."""
    pieces: list[bytes] = []
    index: dict[str, Entry] = {}
    offset = 0  # from the end of the head
    for name, (entry, data) in entries.items():
        pieces.append(data)
        index[name] = (*entry[:5], offset, len(data), entry[7])
        offset += len(data)
    packed = marshal.dumps((head, index))  # type: ignore[arg-type]  # object: marshallable
    if len(_MAGIC) + 4 + len(packed) + offset > MAX_BYTES:
        return
    _replace(path, [_MAGIC, len(packed).to_bytes(4, "little"), packed, *pieces])


def read(path: str) -> tuple[tuple[object, ...], dict[str, tuple[Entry, bytes]]] | None:
    """A cache file's head and entries (what :func:`write` was given), whatever it was
    written for; None when it is not one."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    found = _parse(data)
    if found is None:
        return None
    head, base, index = found
    return head, {name: (e, data[base + e[5] : base + e[5] + e[6]]) for name, e in index.items()}


_SOURCE_LOADERS = (SourceFileLoader, _Loader)


def _compiled(module: ModuleType) -> tuple[Entry, bytes] | None:
    """A module imported from source, with its ``.pyc``'s code when that ``.pyc`` is the
    one of its source as it is now (timestamp-checked, as the import system checks it)."""
    spec = getattr(module, "__spec__", None)
    if (
        spec is None
        or type(spec.loader) not in (SourceFileLoader, _Loader)
        or not spec.has_location
    ):
        return None
    origin = spec.origin
    if not isinstance(origin, str) or not origin.endswith(".py") or not os.path.isabs(origin):
        return None
    try:
        cached = cache_from_source(origin)
        info = os.stat(origin)
        with open(cached, "rb") as file:
            data = file.read()
    except (OSError, ValueError, NotImplementedError):
        return None
    if (
        len(data) < 16
        or data[:4] != MAGIC_NUMBER
        or int.from_bytes(data[4:8], "little") != 0  # a hash-based .pyc: not kept
        or int.from_bytes(data[8:12], "little") != int(info.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(data[12:16], "little") != info.st_size & 0xFFFFFFFF
    ):
        return None
    package = spec.submodule_search_locations is not None
    return (origin, package, *_stamp(info), 0, 0, cached), data[16:]


def _replace(path: str, pieces: list[bytes]) -> None:
    """Write ``pieces`` to a new file beside ``path``, sync it, rename it over ``path``."""
    directory, name = os.path.split(path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _sweep(dir_fd, name)
        temp = f"{name}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o644, dir_fd=dir_fd)
        try:
            try:
                for piece in pieces:
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view) :]
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
    """Remove the temp files of writers that were killed (their process is gone)."""
    prefix = name + "."
    for other in os.listdir(dir_fd):
        pid = other[len(prefix) : -len(".tmp")]
        if not (other.startswith(prefix) and other.endswith(".tmp") and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            os.unlink(other, dir_fd=dir_fd)
        except OSError:  # alive, another user's: its writer renames or removes it
            continue


def _open(path: str) -> int | None:
    """The cache file, opened, if it is one to trust (see the module docstring)."""
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


def _parse(data: bytes) -> tuple[tuple[object, ...], int, dict[str, Entry]] | None:
    """The head, where the compiled code begins and the index of a file that begins with
    ``data`` (None: not a cache file, or ``data`` is too short to hold the index)."""
    start = len(_MAGIC) + 4
    if len(data) < start or not data.startswith(_MAGIC):
        return None
    end = start + int.from_bytes(data[len(_MAGIC) : start], "little")
    if end > len(data):
        return None
    try:
        head, index = marshal.loads(data[start:end])
    except (ValueError, EOFError, TypeError):
        return None
    if type(head) is not tuple or type(index) is not dict:
        return None
    for entry in index.values():
        if type(entry) is not tuple or len(entry) != 8:
            return None
    return head, end, index


def _read_index(fd: int, head: tuple[object, ...]) -> tuple[int, dict[str, Entry]] | None:
    """Where the file's compiled code begins and its index, when it was written for
    ``head`` and nothing on ``sys.path`` comes before what it holds; else None."""
    try:
        data = os.pread(fd, _FIRST_READ, 0)
        found = _parse(data)
        if found is None and data.startswith(_MAGIC) and len(data) == _FIRST_READ:
            size = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 4], "little")
            if size <= MAX_BYTES:
                found = _parse(os.pread(fd, len(_MAGIC) + 4 + size, 0))
    except OSError:
        return None
    if found is None or found[0] != head or _shadowed(found[2]):
        return None
    return found[1], found[2]


def install(package: str) -> CodeCache | None:
    """Put the finder of ``package``'s cache file (``package``: the directory of
    convergent's ``__init__.py``) first on ``sys.meta_path``; None when this interpreter
    keeps no compiled modules (no cache tag)."""
    try:
        folder = os.path.dirname(cache_from_source(os.path.join(package, "__init__.py")))
    except (ValueError, NotImplementedError):
        return None
    key = _key()
    name = f"startup.{sys.implementation.cache_tag}-{_digest(repr(key))}.bin"
    head = (key, _where())
    path = os.path.join(folder, name)
    fd = _open(path)
    found = None if fd is None else _read_index(fd, head)
    if found is None:
        if fd is not None:
            os.close(fd)
        cache = CodeCache(path, head, None, 0, {})
    else:
        cache = CodeCache(path, head, fd, *found)
    sys.meta_path.insert(0, cache)
    return cache
