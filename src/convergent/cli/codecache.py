"""The compiled modules of a command kept in one file: what ``import`` finds without a
search.

Each module a ``convergent`` command imports from source costs the import system ~80 us
here before its code runs (the search along ``sys.path``, the ``.pyc`` opened, read and
checked against its source): ~140 modules a run (asyncio's, msgspec's, convergent's),
about a tenth of a ten-file run. :func:`install` puts a finder on ``sys.meta_path``, just
before the path finder, that answers from one file, ``__pycache__/startup.TAG-KEY.bin``
beside convergent's own ``.pyc`` files (:mod:`convergent.cli.codefile`): each module's
compiled code, read with one ``pread``. :meth:`CodeCache.save` writes it when the
command ends, when this command imported a module the file did not hold, or held in an
older version.

What a module from the file is, and when it is not used:

- It is the module a plain import makes: the same ``__spec__`` (origin, ``cached``,
  ``submodule_search_locations``), ``__file__``, ``__cached__`` and ``__path__``, its
  code's file names those of the source where it is now; its loader is a
  :class:`~importlib.machinery.SourceFileLoader` (``get_source``, ``inspect``,
  tracebacks read the ``.py`` file) that takes the code from the file, or from the
  ``.pyc`` as usual if the file cannot be read.
- A module is taken from the file only while its source is the one its code was kept
  for: the same inode, size and modification time (ns), and its directory the same
  modification time (nothing added beside it that would come first: a package of its
  name, an extension module), checked at each import. Its code is kept from its
  ``.pyc`` only when that ``.pyc`` was written after the source last changed, else
  compiled from the source: a ``.pyc`` that Python takes for the source's (it compares
  seconds and size) may be an older version's, and is not made to last. A module whose
  ``.pyc`` is hash-based (Python checks it against the source's bytes, or not at all),
  or that has a directory of its name where the search looks first (an ``__init__.py``
  put in it would change only that directory's time), is not kept.
- The finder answers for the first :data:`WINDOW` seconds after it is put in place,
  while ``sys.path`` is the list it checked: the imports of a command's start and first
  steps. Later ones (a long-running agent's reloaded policy, a plug-in that changes
  ``sys.path``) search as usual.
- The file is for one interpreter, one user, one optimisation level and one
  ``sys.path`` but its first directory (the script's, or the working directory of
  ``python -m``): its name holds a digest of them. It is not used at all when another
  directory on ``sys.path`` changed (its inode or modification time: a file added there
  could now come first), nor when the first one holds a module, extension or package
  named as a top-level one it keeps from elsewhere; a top-level module is taken from it
  only if it was found in a directory on ``sys.path`` now, a submodule only if it was
  found in the first directory of its package's ``__path__``.
- It is read only when it is a regular file (no symlink followed, no FIFO waited on)
  owned by this user or root and writable by nobody else, as the ``.pyc`` files beside
  it are trusted. It is written as they are: not with ``-B`` or
  ``PYTHONDONTWRITEBYTECODE``, and only where this user may write; mode 0600, a new
  file synced, then renamed over the old one. A file for a ``sys.path`` whose
  directories keep changing is written at most once a minute.
"""

from __future__ import annotations

import _imp
import marshal
import os
import sys
import time
from _frozen_importlib import ModuleSpec
from _frozen_importlib_external import MAGIC_NUMBER, PathFinder, SourceFileLoader, cache_from_source

from convergent.cli.codefile import MAGIC, Entry, compiled, open_trusted, parse, write

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

__all__ = ["KEEP_BYTES", "WINDOW", "CodeCache", "install"]

#: Past this, a save keeps only what this command imported (not every module any command
#: with this ``sys.path`` imported: a run's are ~2.5 MB, with the web view's and etcd's ~13).
KEEP_BYTES = 16 * 1024 * 1024
_FIRST_READ = 64 * 1024  # the head (key and index) of a usual file, in one read
_AGAIN_NS = 60 * 10**9  # a file refused for its sys.path is not written again sooner
#: The finder answers for this long after it is put in place (seconds): the imports of a
#: command's start and first steps. A long-running agent's later imports (a policy
#: reloaded with other kinds, a plug-in) search as usual.
WINDOW = 5.0


def _name(finder: object) -> str:
    kind = finder if isinstance(finder, type) else type(finder)
    return f"{kind.__module__}.{kind.__qualname__}"


def _key() -> tuple[object, ...]:
    """What the file is for: the interpreter, its bytecode, the user and where imports
    look."""
    return (
        MAGIC_NUMBER,
        sys.version,
        sys.flags.optimize,
        sys.pycache_prefix,
        os.geteuid(),
        tuple(sys.path[1:]),  # the first (the script's directory) is looked at by _shadowed
        tuple(map(_name, sys.meta_path)),
        tuple(map(_name, sys.path_hooks)),
    )


def _marks() -> tuple[tuple[int, int, int] | None, ...]:
    """The inode and modification time of each ``sys.path`` directory (None: not
    there): a file added to one could now come first. The first one's (the script's, or
    the working directory under ``python -m``, which change often) is kept apart from
    the key: when it is the one the file was written with, nothing was added there
    since, and :func:`_shadowed` need not list it."""
    marks: list[tuple[int, int, int] | None] = []
    for entry in sys.path:
        try:
            info = os.stat(entry or ".")
        except (OSError, ValueError):
            marks.append(None)
        else:
            marks.append((info.st_dev, info.st_ino, info.st_mtime_ns))
    return tuple(marks)


def _shadowed(index: dict[str, Entry]) -> bool:
    """Whether the first ``sys.path`` directory (the script's, or the working directory
    of ``python -m``, which change often) holds a module, extension or package named as
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
    suffixes = (".py", ".pyc", *_imp.extension_suffixes())
    for name in names:
        base, dot, rest = name.partition(".")
        entry = index.get(base)
        if entry is None:
            continue
        found = os.path.dirname(entry[0])  # a module's directory, a package's own
        if (os.path.dirname(found) if entry[1] else found) == here:
            continue
        if dot:
            if "." + rest in suffixes:
                return True
        elif any(os.path.exists(os.path.join(first, name, "__init__" + s)) for s in suffixes):
            return True
    return False


def _digest(text: str) -> str:
    """FNV-1a, 32 bits: a short name for a key (no hash module imported for it)."""
    value = 0x811C9DC5
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{value:08x}"


class _Loader(SourceFileLoader):
    """A source module's loader whose code comes from the cache file."""

    def __init__(self, fullname: str, path: str, cache: CodeCache, entry: Entry) -> None:
        super().__init__(fullname, path)
        self._cache = cache
        self._entry = entry

    def get_code(self, fullname: str) -> CodeType | None:
        if fullname == self.name:
            code = self._cache.code(fullname, self._entry)
            if code is not None:
                return code
        return super().get_code(fullname)


_LOADERS = (SourceFileLoader, _Loader)


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
        self._path = list(sys.path)  # as the key and the marks saw it
        self._until = time.monotonic() + WINDOW
        try:
            cwd = os.getcwd()
        except OSError:  # removed: the path finder finds nothing through "" either
            cwd = ""
        roots = [entry or cwd for entry in sys.path]  # as the path finder has them
        self._roots = {*roots, *map(os.path.abspath, roots)}
        self._dirs: dict[str, int | None] = {}  # directory -> mtime ns, stat'ed once
        self._stale: set[str] = set()  # kept in an older version than the source's
        self._served: set[str] = set()  # modules made from the file
        self._damaged = False  # some code in it could not be read: keep only what could
        self.refused: int | None = None  # mtime of a file there that was for another path

    @property
    def served(self) -> int:
        """How many modules were made from the file."""
        return len(self._served)

    # The finder (on sys.meta_path)
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        entry = self._index.get(name)
        if entry is None or target is not None:
            return None
        if sys.path != self._path or time.monotonic() > self._until:
            return None  # sys.path is no longer the one checked, or start-up is over
        origin, package = entry[0], entry[1]
        where = os.path.dirname(origin)  # a module's directory, a package's own
        found_in = os.path.dirname(where) if package else where  # where the search found it
        if path is None:  # a top-level module: from a directory on this sys.path only
            if found_in not in self._roots:
                return None
        elif found_in != next(iter(path), None):
            return None  # its package is elsewhere, or another portion comes first
        try:
            info = os.stat(origin)
        except OSError:
            self._stale.add(name)
            return None
        if (info.st_ino, info.st_mtime_ns, info.st_size) != entry[2:5]:
            self._stale.add(name)
            return None
        if self._dir(where) != entry[8]:  # something added beside it could come first
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

    def _dir(self, folder: str) -> int | None:
        if folder not in self._dirs:
            try:
                self._dirs[folder] = os.stat(folder).st_mtime_ns
            except OSError:
                self._dirs[folder] = None
        return self._dirs[folder]

    def invalidate_caches(self) -> None:
        """``importlib.invalidate_caches()``: directories are looked at again."""
        self._dirs.clear()

    def code(self, name: str, entry: Entry) -> CodeType | None:
        """The code kept for the module ``name``, its file name the source's now; None
        when it cannot be read (the next save writes it again)."""
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
        _imp._fix_co_filename(code, entry[0])  # type: ignore[attr-defined]  # as SourceLoader
        self._served.add(name)
        return code

    # Writing
    def save(self) -> None:
        """Write the file again when this command imported a module it did not hold (or
        held in an older version); a failure (read-only, full) leaves it as it was."""
        if sys.dont_write_bytecode or not os.access(os.path.dirname(self.path), os.W_OK):
            return
        if self.refused is not None and time.time_ns() - self.refused < _AGAIN_NS:
            return  # written for this key less than a minute ago: its sys.path churns
        try:
            new: dict[str, tuple[Entry, bytes]] = {}
            for name, module in list(sys.modules.items()):
                if name in self._before or (name in self._index and name not in self._stale):
                    continue
                found = compiled(module, _LOADERS)
                if found is not None and not _directory_before(name, found[0]):
                    new[name] = found
            if new or self._stale:
                self._write(new)
        except Exception:  # the cache is an optimisation: the command's outcome stands
            return

    def _write(self, new: dict[str, tuple[Entry, bytes]]) -> None:
        entries: dict[str, tuple[Entry, bytes]] = {}
        for name, entry in self._index.items():
            if name in new or name in self._stale or self._fd is None:
                continue
            if (self._damaged and name not in self._served) or _directory_before(name, entry):
                continue  # unread code of a damaged file; or see _directory_before
            data = os.pread(self._fd, entry[6], self._base + entry[5])
            if len(data) == entry[6]:
                entries[name] = entry, data
        if sum(len(code) for _, code in (*entries.values(), *new.values())) > KEEP_BYTES:
            entries = {name: kept for name, kept in entries.items() if name in self._served}
        entries.update(new)
        write(self.path, self._head, entries)


def _directory_before(name: str, entry: Entry) -> bool:
    """Whether a directory named as the module is where the search looks before it:
    beside a module, or in a ``sys.path`` directory before a top-level one's. An
    ``__init__.py`` put in it would make a package that comes first, and change only that
    directory's time: such a module is not kept."""
    tail = name.rpartition(".")[2]
    where = os.path.dirname(entry[0])
    found_in = os.path.dirname(where) if entry[1] else where
    if not entry[1] and os.path.isdir(os.path.join(where, tail)):
        return True
    if "." in name:
        return False
    for folder in sys.path:
        folder = folder or "."
        if os.path.abspath(folder) == found_in:
            return False
        if os.path.isdir(os.path.join(folder, tail)):
            return True
    return False


def _read(fd: int) -> tuple[tuple[object, ...], int, dict[str, Entry]] | None:
    """The head, where the compiled code begins and the index of the file ``fd``."""
    try:
        data = os.pread(fd, _FIRST_READ, 0)
        found = parse(data)
        if found is None and len(data) == _FIRST_READ:  # a longer head: read it whole
            end = len(MAGIC) + 4 + int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "little")
            if end <= os.fstat(fd).st_size:
                found = parse(os.pread(fd, end, 0))
    except (OSError, ValueError, OverflowError):
        return None
    return found


def install(package: str) -> CodeCache | None:
    """Put the finder of ``package``'s cache file (``package``: the directory of
    convergent's ``__init__.py``) on ``sys.meta_path``, before the path finder; None
    when there is none (no cache tag for .pyc files, or anything amiss: the command
    imports as usual)."""
    try:
        return _install(package)
    except Exception:
        return None


def _install(package: str) -> CodeCache | None:
    try:
        folder = os.path.dirname(cache_from_source(os.path.join(package, "__init__.py")))
    except (ValueError, NotImplementedError):
        return None
    key = _key()
    path = os.path.join(folder, f"startup.{sys.implementation.cache_tag}-{_digest(repr(key))}.bin")
    marks = _marks()
    first, rest = (marks[0], marks[1:]) if marks else (None, ())
    head = (key, rest, first)
    fd, base, index = open_trusted(path), 0, {}
    refused = None
    if fd is not None:
        found = _read(fd)
        if found is not None and len(found[0]) == 3 and found[0][:2] == head[:2]:
            unchanged = first is not None and found[0][2] == first
            if unchanged or not _shadowed(found[2]):
                base, index = found[1], found[2]
        if not index:
            try:
                if found is not None:  # whole, for sys.path as it was: not written too often
                    refused = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)
                fd = None
    cache = CodeCache(path, head, fd, base, index)
    cache.refused = refused
    try:
        at = sys.meta_path.index(PathFinder)
    except ValueError:
        at = len(sys.meta_path)
    sys.meta_path.insert(at, cache)
    return cache
