"""What runs first inside ``convergent.pyz``, before any other part of convergent.

The file's ``__main__.py`` (written by :mod:`convergent.remote.dist`) checks the Python
version in a syntax every Python reads, then calls :func:`prepare` with the file's
manifest: for each CPython ABI the file carries, the member holding the compiled
modules (a zip inside the zip), its SHA-256 and the oldest glibc its wheels accept.
:func:`prepare` (then ``__main__.py`` runs the command line, ``convergent.cli.main``):

1. makes ``sys.path[0]`` (the file) absolute: zipimport opens the file again by that
   path for every module, and a run may change its working directory;
2. checks that this Python's extension ABI (``cpython-311-x86_64-linux-gnu``) is one the
   file carries and that the C library is recent enough; otherwise it says what the file
   needs and which Python this is, and exits 2;
3. finds the compiled modules in ``CACHE/native/SHA256`` (:func:`native_dir`), extracting
   them the first time (zipimport cannot load a shared library);
4. leaves on ``sys.path`` the file, that directory and the standard library, nothing of
   the host's site-packages (:func:`isolate`).

Only ``os`` and ``sys`` are imported here (``--version`` stays cheap); ``zipfile``,
``hashlib`` and ``shutil`` only on a first run.

The cache directory (:func:`cache_root`): ``$CONVERGENT_CACHE_DIR``, else
``/var/cache/convergent`` for root, else ``$XDG_CACHE_HOME/convergent`` or
``~/.cache/convergent``. It is walked from ``/`` by :func:`private_dir`, one component
at a time with ``openat(O_PATH|O_NOFOLLOW)``: every directory on the way belongs to root
or to this user and nobody else may write in it (unless it is sticky, like ``/tmp``); a
symlink on the way is followed only when root or this user owns it; the directories
convergent keeps there (``native`` and each extraction) are made 0700, must belong to
this user, must be written by nobody else and are never symlinks. Anything else is
refused with an error naming the path, its owner and the fix: never followed, never
written into. A root agent thus never loads code from a directory another user could
have prepared.

Extraction (:func:`native_dir`): the member is read and its SHA-256 checked, then
unpacked into a new private directory ``.tmp-PID-RANDOM`` beside its final name, every
file created ``O_EXCL|O_NOFOLLOW`` through a directory descriptor, all made durable by
one ``syncfs``; the whole directory is then renamed to its key (``renameat``: all or
nothing; when a concurrent first run got there first, ours is removed) and the cache
directory fsynced. A run killed on the way leaves only a ``.tmp-`` directory: the next
run removes those whose process is gone and extracts again.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any, NoReturn

__all__ = [
    "ENV",
    "NATIVE",
    "DistError",
    "abi_problem",
    "abi_tag",
    "cache_root",
    "describe_abi",
    "isolate",
    "native_dir",
    "prepare",
    "private_dir",
]

ENV = "CONVERGENT_CACHE_DIR"  # where the caches go, instead of the default
NATIVE = "native"  # CACHE/native/SHA256: the compiled modules of one file
TMP = ".tmp-"  # an extraction under way (or killed): .tmp-PID-RANDOM
_MAX_HOPS = 32  # symlinks followed on the way to the cache, as systemd's CHASE_MAX
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_STICKY = 0o1000
_IFMT, _IFDIR, _IFLNK = 0o170000, 0o040000, 0o120000


class DistError(Exception):
    """The single file cannot run (or be built) here; ``str()`` is the whole message:
    what, where, and how to fix it."""


# -- the checks ---------------------------------------------------------------------------


def abi_tag() -> str:
    """This Python's extension ABI, as in the names of its shared libraries:
    ``cpython-311-x86_64-linux-gnu``."""
    from importlib.machinery import EXTENSION_SUFFIXES

    return EXTENSION_SUFFIXES[0].removeprefix(".").removesuffix(".so")


def describe_abi(tag: str) -> str:
    """``CPython 3.11 on x86_64 Linux (glibc)`` for ``cpython-311-x86_64-linux-gnu``."""
    parts = tag.split("-")
    if len(parts) < 4 or not parts[1].isdigit():
        return tag
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get(parts[0], parts[0])
    version = f"{parts[1][0]}.{parts[1][1:]}"
    libc = {"gnu": " (glibc)", "musl": " (musl)"}.get(parts[-1], "")
    return f"{impl} {version} on {parts[2]} {parts[3].capitalize()}{libc}"


def _glibc() -> tuple[int, int] | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    major, _, minor = version.partition(".")
    if name != "glibc" or not major.isdigit():
        return None
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def abi_problem(abis: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why this Python cannot run a file carrying compiled modules for ``abis`` (None:
    it can): the ABI it lacks or the glibc it needs, named with what this Python is."""
    tag = abi_tag()
    python = f"{sys.executable or 'python3'} (Python {sys.version.split()[0]}, {tag})"
    entry = abis.get(tag)
    if entry is None:
        needs = " or ".join(f"{describe_abi(t)} [{t}]" for t in sorted(abis))
        return (
            f"this file carries compiled modules (msgspec...) for {needs}; {python} cannot "
            "load them. Run it with such a python, or build a file for this one: "
            "`make dist` (python -m convergent.remote.dist) where convergent is installed "
            "for this Python"
        )
    need = entry.get("glibc")
    if need:
        major, minor = int(need[0]), int(need[1])
        have = _glibc()
        if have is None or have < (major, minor):
            found = "no glibc" if have is None else f"glibc {have[0]}.{have[1]}"
            return (
                f"this file's compiled modules need glibc {major}.{minor} or newer; this "
                f"host has {found} ({python}). Run it on a newer system, or build a file "
                "on a system like this one with `make dist`"
            )
    return None


# -- the cache directory ------------------------------------------------------------------


def cache_root(env: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """Where convergent keeps its caches: ``$CONVERGENT_CACHE_DIR``, else
    ``/var/cache/convergent`` for root, else ``$XDG_CACHE_HOME/convergent`` or
    ``~/.cache/convergent`` (a relative ``XDG_CACHE_HOME`` is ignored, as the XDG
    specification says)."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    given = env.get(ENV, "")
    if given:
        if not given.startswith("/"):
            raise DistError(f"${ENV}={given!r}: give an absolute path")
        return os.path.normpath(given)
    if uid == 0:
        return "/var/cache/convergent"
    base = env.get("XDG_CACHE_HOME", "")
    if not base.startswith("/"):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".cache")
    return os.path.join(os.path.normpath(base), "convergent")


def _refuse(path: str, what: str, fix: str) -> DistError:
    return DistError(f"{path} {what}: {fix}")


def private_dir(path: str, private: int = 1) -> int:
    """An ``O_PATH`` descriptor of the directory ``path`` (absolute), made if missing
    (mode 0700, parents too), after checking every directory from ``/`` down as the
    module docstring says; the last ``private`` components are convergent's own: they
    belong to this user, nobody else may write them, and they are not symlinks.

    Raises :class:`DistError` naming what is wrong, or OSError.
    """
    if not path.startswith("/"):
        raise DistError(f"{path}: the cache directory must be an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DistError(f"{path}: give the cache directory without '..'")
    euid = os.geteuid()
    todo = [(name, i >= len(parts) - private) for i, name in enumerate(parts)][::-1]
    fd = os.open("/", _PATH & ~os.O_NOFOLLOW)
    where, hops = "/", 0
    try:
        while todo:
            name, own = todo.pop()
            here = os.path.join(where, name)
            if name == "..":
                child = os.open("..", _PATH, dir_fd=fd)
                os.close(fd)
                fd, where = child, os.path.dirname(where)
                continue
            try:
                child = os.open(name, _PATH, dir_fd=fd)
            except FileNotFoundError:
                _mkdir(name, 0o700, fd)
                child = os.open(name, _PATH, dir_fd=fd)
            try:
                st = os.fstat(child)
                kind = st.st_mode & _IFMT
                if kind == _IFLNK:
                    target = os.readlink("", dir_fd=child)
                    if own:
                        raise _refuse(
                            here,
                            f"is a symlink (to {target}, owned by uid {st.st_uid}), where "
                            "convergent keeps a directory of its own",
                            f"remove it (rm {here}) and run again; convergent makes it",
                        )
                    if st.st_uid not in (0, euid):
                        raise _refuse(
                            here,
                            f"is a symlink owned by uid {st.st_uid}, who could point it anywhere",
                            f"replace it by a directory, or set ${ENV} to another place",
                        )
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise DistError(f"{path}: too many levels of symbolic links")
                    todo.extend((p, False) for p in reversed(target.split("/")) if p)
                    if target.startswith("/"):
                        os.close(fd)
                        fd, where = os.open("/", _PATH & ~os.O_NOFOLLOW), "/"
                    continue
                if kind != _IFDIR:
                    raise _refuse(here, "is not a directory", f"move it away, or set ${ENV}")
                _check_dir(here, st, own, euid)
            except BaseException:
                os.close(child)
                raise
            os.close(fd)
            fd, where = child, here
        return fd
    except BaseException:
        os.close(fd)
        raise


def _mkdir(name: str, mode: int, fd: int) -> None:
    """``mkdir`` that leaves an existing entry to the checks that follow."""
    try:
        os.mkdir(name, mode, dir_fd=fd)
    except FileExistsError:
        return


def _check_dir(here: str, st: os.stat_result, own: bool, euid: int) -> None:
    mode = st.st_mode & 0o7777
    if own:
        if st.st_uid != euid:
            raise _refuse(
                here,
                f"belongs to uid {st.st_uid}, not to this user (uid {euid}), who would "
                "load code from it",
                f"remove it (rm -r {here}) and run again; convergent makes it, mode 0700",
            )
        if mode & 0o022:
            raise _refuse(
                here,
                f"may be written by other users (mode {mode:04o}), who could put code in it",
                f"chmod 0700 {here}",
            )
        return
    if st.st_uid not in (0, euid):
        raise _refuse(
            here,
            f"belongs to uid {st.st_uid}, who could swap what is below it",
            f"use a cache directory whose every parent only root or you may change: set ${ENV}",
        )
    if mode & 0o022 and not mode & _STICKY:
        raise _refuse(
            here,
            f"may be written by other users (mode {mode:04o}), who could swap what is below it",
            f"chmod go-w {here}, or set ${ENV} to another place",
        )


# -- the compiled modules -----------------------------------------------------------------


def native_dir(archive: str, entry: Mapping[str, Any], root: str | None = None) -> str:
    """The directory holding the compiled modules of ``entry`` (the manifest's entry for
    this ABI: ``member``, ``sha256``) of the file ``archive``: found in the cache, or
    extracted there now. Raises :class:`DistError` or OSError."""
    base = f"{root or cache_root()}/{NATIVE}"
    key = str(entry["sha256"])
    fd = private_dir(base, private=1)
    try:
        try:
            found = os.open(key, _PATH, dir_fd=fd)
        except FileNotFoundError:
            _extract(fd, base, key, archive, str(entry["member"]))
            found = os.open(key, _PATH, dir_fd=fd)
        try:
            st = os.fstat(found)
            if st.st_mode & _IFMT != _IFDIR:
                raise _refuse(f"{base}/{key}", "is not a directory", f"remove it (rm {base}/{key})")
            _check_dir(f"{base}/{key}", st, True, os.geteuid())
        finally:
            os.close(found)
    finally:
        os.close(fd)
    return f"{base}/{key}"


def _extract(fd: int, base: str, key: str, archive: str, member: str) -> None:
    import hashlib
    import io
    import zipfile
    import zipimport

    _sweep(fd)
    data = zipimport.zipimporter(archive).get_data(member)
    if hashlib.sha256(data).hexdigest() != key:
        raise DistError(
            f"{archive} is damaged: its member {member} does not have the SHA-256 its "
            "manifest names; copy the file again (or build it again: make dist)"
        )
    tmp = f"{TMP}{os.getpid()}-{os.urandom(4).hex()}"
    os.mkdir(tmp, 0o700, dir_fd=fd)
    try:
        top = os.open(tmp, _DIR, dir_fd=fd)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                _unpack(zf, top, f"{base}/{tmp}")
        finally:
            os.close(top)
        try:
            os.rename(tmp, key, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            if not os.path.isdir(f"{base}/{key}"):
                raise DistError(f"cannot rename {base}/{tmp} to {key}: {exc}") from exc
            _remove(fd, tmp)  # a concurrent first run got there first: use its copy
        here = os.open(".", _DIR & ~os.O_NOFOLLOW, dir_fd=fd)
        try:
            os.fsync(here)
        finally:
            os.close(here)
    except BaseException:
        _remove(fd, tmp)
        raise


def _unpack(zf: Any, top: int, where: str) -> None:
    """Every member of ``zf`` under the directory ``top``: directories 0755 (the top one
    is 0700), files 0644 created ``O_EXCL|O_NOFOLLOW``; then one syncfs for them all."""
    dirs: dict[str, int] = {"": top}
    try:
        for info in zf.infolist():
            name = info.filename
            parts = name.split("/")
            if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise DistError(f"{where}: refusing the member name {name!r}")
            at = ""
            for part in parts[:-1]:
                below = f"{at}/{part}" if at else part
                if below not in dirs:
                    _mkdir(part, 0o755, dirs[at])
                    dirs[below] = os.open(part, _DIR, dir_fd=dirs[at])
                at = below
            out = os.open(parts[-1], _CREATE, 0o644, dir_fd=dirs[at])
            try:
                view = memoryview(zf.read(info))
                while view:
                    view = view[os.write(out, view) :]
            finally:
                os.close(out)
        _syncfs(top)
    finally:
        for d in dirs.values():
            if d != top:
                os.close(d)


def _syncfs(fd: int) -> None:
    """Make what was written on ``fd``'s file system durable: one ``syncfs`` (one journal
    commit) instead of an fsync per file, which costs seconds for a few hundred files;
    without syncfs (ctypes missing), ``os.sync``."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (ImportError, OSError, AttributeError):
        pass
    os.sync()


def _sweep(fd: int) -> None:
    """Remove the ``.tmp-`` directories of extractions whose process is gone."""
    listing = os.open(".", _DIR & ~os.O_NOFOLLOW, dir_fd=fd)
    try:
        names = os.listdir(listing)
    finally:
        os.close(listing)
    for name in names:
        if not name.startswith(TMP):
            continue
        pid = name[len(TMP) :].partition("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        _remove(fd, name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier process with this PID: this one has not begun yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _remove(fd: int, name: str) -> None:
    import shutil

    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if st.st_mode & _IFMT == _IFDIR:
        shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
    else:
        os.unlink(name, dir_fd=fd)


# -- the preparation ----------------------------------------------------------------------------


def prepare(archive: str, abis: Mapping[str, Mapping[str, Any]], tops: Iterable[str] = ()) -> None:
    """Check, then find or extract the compiled modules, and leave ``sys.path`` with the
    file, its compiled modules and the standard library only (:func:`isolate`; ``tops``:
    the top-level modules the file carries); see the module docstring. Exits 2 with a
    message naming the file when it cannot run here."""
    archive = os.path.abspath(archive)
    name = os.path.basename(archive)
    try:
        problem = abi_problem(abis)
        if problem is not None:
            raise DistError(problem)
        where = native_dir(archive, abis[abi_tag()])
    except DistError as exc:
        _fail(name, str(exc))
    except OSError as exc:
        _fail(name, f"cannot prepare its compiled modules: {exc}")
    isolate(archive, where, tops)


def isolate(archive: str, where: str, tops: Iterable[str]) -> None:
    """``sys.path``: the file, then ``where``, then the standard library; no
    site-packages (the host's packages, of other versions, never mix with the file's:
    the file runs the same everywhere). A module of ``tops`` that the host's ``.pth``
    files imported at start-up from elsewhere is forgotten, so the file's is used."""
    stdlib = os.path.dirname(os.__file__)
    kept = [archive, where]
    for entry in sys.path:
        inside = entry == stdlib or entry.startswith(stdlib + "/")
        packages = entry.endswith(("site-packages", "dist-packages"))
        stdzip = entry.endswith(".zip") and os.path.dirname(entry) == os.path.dirname(stdlib)
        if entry not in kept and ((inside and not packages) or (stdzip and entry != archive)):
            kept.append(entry)
    sys.path[:] = kept
    ours = frozenset(tops)
    if not ours:
        return
    for module in [m for m in sys.modules if m.partition(".")[0] in ours]:
        path = getattr(sys.modules[module], "__file__", None) or ""
        if path and not path.startswith("/"):
            path = os.path.abspath(path)  # imported through a relative sys.path[0]
        if not path.startswith((archive + "/", where + "/")):
            del sys.modules[module]


def _fail(name: str, message: str) -> NoReturn:
    sys.stderr.write(f"{name}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)
