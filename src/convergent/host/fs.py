"""Paths a local user can write, walked and changed safely by an agent running as root.

Every kind that touches files goes through here; nothing else walks or writes a path.

::

    with fs.locate("/etc/app/app.conf", create=True) as at:   # parent fd + final name
        st = fs.lstat(at)                                      # never follows the name
        fd, temp = atomic.create_temp(at, data, mode=0o640, uid=0, gid=33)
        await commits.commit(fd, temp, at, tree=False)         # fsync, renameat

Rules (the security model in the README):

- :func:`locate` resolves the *parent* of a path like systemd's ``chase()`` with
  ``CHASE_SAFE``: from ``/``, one component at a time with
  ``openat(O_PATH|O_NOFOLLOW)``; symlinks are followed here, never by the kernel, and a
  transition from something owned by a non-root user into something owned by another
  (root included) is refused with :class:`PathRefused` naming both and how to fix it. A
  symlink's own owner counts: a user's symlink into ``/etc`` is refused; root's
  ``/var/run -> /run`` is fine. The result is a directory descriptor and the final
  name; every change is an ``*at`` call on it.
- The final name is never followed: opens use ``O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC`` and are
  checked with ``fstat``; a FIFO, socket or device is refused, never opened blocking;
  modes and owners are changed only through such a verified descriptor.
- Writing content goes through :mod:`convergent.host.atomic` (temp files made private
  through the directory descriptor, fsync, ``renameat``), built on :class:`At`.
- Speed: a directory walked once is found again with one ``openat2(RESOLVE_NO_SYMLINKS)``
  and an ``fstat`` comparing its identity (the same directory reached without any
  symlink, so through the same ancestors); a miss or a symlink takes the full walk. A
  check (read only) reuses the directory an earlier check of the same pass of the event
  loop found by those rules, dropped when the loop next turns: ``locate(..., check=True)``
  a ``dup`` of it, :func:`read_checked` the descriptor itself, never handed out.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import stat
import sys
from typing import Any

from convergent.host.chase import PathRefused, check_transition, open_directory, walk

__all__ = [
    "MAX_READ",
    "At",
    "PathRefused",
    "default_mode",
    "kind_name",
    "locate",
    "lstat",
    "make_directory",
    "open_directory",
    "open_node",
    "read_all",
    "read_checked",
    "read_if_regular",
    "read_regular",
    "remove",
    "set_meta",
]

#: The largest file read into memory (to compare, edit or copy it): a user's sparse
#: 64 GiB file at a managed path must not make the agent allocate 64 GiB.
MAX_READ = 256 << 20
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KIND_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}
# directory path -> (dev, ino) walked safely, and the path as bytes for openat2
_known: dict[str, tuple[tuple[int, int], bytes]] = {}
_KNOWN_MAX = 4096
# directory path -> (fd, (dev, ino), owner): found by checks during this pass of the loop
_PASS_MAX = 32  # directories kept for one pass's checks (each a descriptor held open)
_this_pass: dict[str, tuple[int, tuple[int, int], int]] = {}
_pass_loop: list[Any] = [None]  # the loop whose pass _this_pass belongs to
_umask: list[int] = []


def kind_name(mode: int) -> str:
    """``file``, ``directory``, ``symlink``, ``fifo``... for an ``st_mode``."""
    return _KIND_NAMES.get(stat.S_IFMT(mode), "special file")


class At:
    """Where a path lives: an ``O_PATH`` descriptor of its directory and its final name.

    Owns ``fd`` (closed by :meth:`close` or on leaving a ``with`` block, unless
    :meth:`take` handed it on). ``dir`` is the directory's path (for messages),
    ``ident`` its ``(st_dev, st_ino)`` and ``owner`` its uid. ``entered``: the final
    name was followed (``locate(follow=True)``), so the step into it is judged as every
    other step, on what :func:`open_node` and :func:`read_if_regular` open.
    """

    __slots__ = ("dir", "entered", "fd", "ident", "name", "owner")

    def __init__(
        self,
        fd: int,
        name: str,
        directory: str,
        ident: tuple[int, int],
        owner: int,
        entered: bool = False,
    ) -> None:
        self.fd = fd
        self.name = name
        self.dir = directory
        self.ident = ident
        self.owner = owner
        self.entered = entered

    @property
    def path(self) -> str:
        return self.dir if self.name == "." else f"{self.dir.rstrip('/')}/{self.name}"

    def take(self) -> At:
        """A new owner of the descriptor; this one no longer closes it."""
        taken = At(self.fd, self.name, self.dir, self.ident, self.owner, self.entered)
        self.fd = -1
        return taken

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> At:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- resolving --------------------------------------------------------------------------


def locate(path: str, *, create: bool = False, follow: bool = False, check: bool = False) -> At:
    """The directory of the absolute, normalised ``path`` and its final name.

    ``create``: make missing directories on the way (mode 0777 & ~umask, like
    ``mkdir -p``). ``follow``: a symlink as the final component is followed too (by the
    same rules), for paths that are only read (``source:``). ``check``: the caller only
    reads (a resource's check); the directory may be one found by an earlier check in
    this pass of the event loop. Raises FileNotFoundError or NotADirectoryError naming
    the component, or :class:`PathRefused`.
    """
    head, _, name = path.rpartition("/")
    if not name:  # "/" itself: "." in the root directory
        fd = os.open("/", _DIR)
        st = os.fstat(fd)
        return At(fd, ".", "/", (st.st_dev, st.st_ino), st.st_uid)
    parent = head or "/"
    check = check and not follow  # a followed final name is judged on every call
    if check and _this_pass:
        found = _this_pass.get(parent)
        if found is not None and _in_pass():
            return At(os.dup(found[0]), name, parent, found[1], found[2])
    known = _known.get(parent)
    if known is not None:
        fd = _openat2[0](known[1])
        if fd >= 0:
            st = os.fstat(fd)
            ident = known[0]
            if (st.st_dev, st.st_ino) == ident and not (follow and _walk_final(fd, st, path)):
                if check:
                    _remember(parent, fd, ident, st.st_uid)
                return At(fd, name, parent, ident, st.st_uid, follow)
            os.close(fd)
        _known.pop(parent, None)
    fd, st, final, where, linked = walk(path, create=create, follow=follow)
    ident = (st.st_dev, st.st_ino)
    if not linked and where == parent and _openat2_works():
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[parent] = (ident, os.fsencode(parent))
        if check:
            _remember(parent, fd, ident, st.st_uid)
    return At(fd, final, where, ident, st.st_uid, follow)


def _judge_entered(at: At, st: os.stat_result) -> None:
    """The step into a followed final name, judged on the node opened (the walk judged
    the one it found, which may have been swapped since): from a non-root owner's
    directory only into that owner's."""
    if at.entered and at.owner != 0 and st.st_uid != at.owner:
        parent = os.stat_result((stat.S_IFDIR, 0, 0, 0, at.owner, 0, 0, 0, 0, 0))
        check_transition(parent, at.dir, st, at.path)


def _in_pass() -> bool:
    """Whether the loop that _this_pass belongs to runs in this thread now. Its own
    ``_thread_id`` (set while an asyncio loop runs), not ``get_running_loop()``: that
    makes a ``getpid`` system call on every check."""
    loop = _pass_loop[0]
    thread = getattr(loop, "_thread_id", None)
    if thread is None:
        return loop is not None and loop is _running_loop()
    return bool(thread == _thread.get_ident())


def _running_loop() -> Any:
    """The running asyncio loop of this thread, or None (no loop, or asyncio not loaded)."""
    asyncio = sys.modules.get("asyncio")
    return None if asyncio is None else asyncio.events._get_running_loop()


def _remember(parent: str, fd: int, ident: tuple[int, int], owner: int) -> None:
    """Keep a ``dup`` of the directory ``fd`` (found by :func:`locate`'s rules) for the
    checks of this pass of the running loop; dropped when the loop next turns."""
    loop = _running_loop()
    if loop is None:
        return
    current = _pass_loop[0]
    if current is not loop:
        if getattr(current, "_thread_id", None) not in (None, _thread.get_ident()):
            return  # another thread's loop is in its pass: its directories stay its own
        _end_pass()  # left by a loop that no longer runs
    if len(_this_pass) >= _PASS_MAX:
        return  # held descriptors stay few: 512 first checks in as many directories in
        # one pass must not take the agent to its descriptor limit
    if not _this_pass:
        _pass_loop[0] = loop
        loop.call_soon(_end_pass)
    old = _this_pass.get(parent)
    if old is not None:
        os.close(old[0])
    _this_pass[parent] = (os.dup(fd), ident, owner)


def _end_pass() -> None:
    """Close the directories kept for this pass's checks."""
    for fd, _, _ in _this_pass.values():
        os.close(fd)
    _this_pass.clear()
    _pass_loop[0] = None


def _walk_final(fd: int, st: os.stat_result, path: str) -> bool:
    """For a followed final name in the directory ``fd`` (``st``): True when it is a
    symlink (the full walk follows it); the step into it checked as the walk checks it
    (PathRefused), so that the shortcut and the walk agree."""
    head, _, name = path.rpartition("/")
    try:
        node = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    if stat.S_ISLNK(node.st_mode):
        return True
    check_transition(st, head or "/", node, path)
    return False


class _Openat2:
    """The openat2 syscall (437) through :mod:`convergent.host.libc`, for one fixed
    ``struct open_how``: ``O_PATH|O_DIRECTORY|O_CLOEXEC`` with
    ``RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS``."""

    __slots__ = ("_how", "_size", "_syscall", "works")

    def __init__(self) -> None:
        import struct

        from convergent.host import libc

        args = (libc.c_long, libc.c_int, libc.c_char_p, libc.c_char_p, libc.c_ulong)
        self._syscall: Any = libc.function("syscall", libc.c_long, *args)
        # struct open_how: u64 flags, mode, resolve (read by the kernel, never written)
        self._how = struct.pack("=QQQ", _DIR, 0, 0x04 | 0x02)
        self._size = len(self._how)
        probe = self(b"/")
        self.works = probe >= 0  # ENOSYS (old kernel) or a seccomp filter: walk always
        if self.works:
            os.close(probe)

    def __call__(self, path: bytes) -> int:
        """A descriptor of the directory ``path``, or -1 (symlink on the way, missing...)."""
        fd: int = self._syscall(437, -100, path, self._how, self._size)
        return fd if fd >= 0 else -1


_openat2: list[_Openat2] = []


def _openat2_works() -> bool:
    """Whether directories can be found again by openat2 (made on first use)."""
    if not _openat2:
        _openat2.append(_Openat2())
    return _openat2[0].works


# -- reading and changing the final component --------------------------------------------


def lstat(at: At) -> os.stat_result | None:
    """The final component's own stat (never followed); None when it does not exist."""
    try:
        return os.stat(at.name, dir_fd=at.fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


_ACCEPT = {None: (stat.S_IFREG, stat.S_IFDIR), True: (stat.S_IFDIR,), False: (stat.S_IFREG,)}
_EXPECT = {None: "a file or directory", True: "a directory", False: "a regular file"}


def open_node(
    at: At, *, directory: bool | None = None, change: bool = False
) -> tuple[int, os.stat_result]:
    """Open the final component without following or blocking, and ``fstat`` it.

    Only a regular file or a directory is accepted (``directory``: only that one);
    anything else, a symlink included, raises :class:`PathRefused` naming it. With
    ``change`` (the caller will chmod or chown it), a file with several hard links in a
    directory of a non-root user that is not that user's own is refused too: it may be
    another file linked in (where ``fs.protected_hardlinks`` is off).
    """
    try:
        fd = os.open(at.name, _OPEN, dir_fd=at.fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRefused(
                errno.ELOOP, f"{at.path} is a symlink; convergent does not follow it"
            ) from None
        if exc.errno == errno.ENXIO:  # a socket
            raise PathRefused(errno.ENXIO, f"{at.path} is a socket; remove it") from None
        raise
    st = os.fstat(fd)
    try:
        _judge_entered(at, st)
    except PathRefused:
        os.close(fd)
        raise
    if stat.S_IFMT(st.st_mode) not in _ACCEPT[directory]:
        os.close(fd)
        raise PathRefused(
            errno.EPERM,
            f"{at.path} is a {kind_name(st.st_mode)}, not {_EXPECT[directory]}",
        )
    if change and st.st_nlink > 1 and at.owner not in (0, st.st_uid) and stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PathRefused(
            errno.EPERM,
            f"{at.path} has {st.st_nlink} hard links, is owned by uid {st.st_uid} and sits "
            f"in a directory of uid {at.owner}: it may be another file linked in, so its "
            "mode and owner are left alone; remove the extra links, or give content (the "
            "file is then replaced, never written through the link)",
        )
    return fd, st


def read_if_regular(at: At) -> tuple[bytes | None, os.stat_result | None]:
    """The bytes and stat of the final component if it is a regular file; otherwise
    None and its own stat (None when nothing is there). Opened like :func:`open_node`:
    a FIFO or device is never read, a symlink never followed."""
    return _read_in(at.fd, at.name, at.path, at)


def read_checked(path: str) -> tuple[bytes | None, os.stat_result | None] | None:
    """For a check: ``read_if_regular(locate(path, check=True))`` through the descriptor of
    the directory an earlier check of this pass of the loop found (no ``dup``, no
    :class:`At`: it never leaves this call); None when the pass holds none: locate it."""
    head, _, name = path.rpartition("/")
    found = _this_pass.get(head or "/") if _this_pass else None
    if found is None or not name or not _in_pass():
        return None
    return _read_in(found[0], name, path)


def _read_in(
    dir_fd: int, name: str, path: str, at: At | None = None
) -> tuple[bytes | None, os.stat_result | None]:
    try:
        fd = os.open(name, _OPEN, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO):
            raise
        with contextlib.suppress(FileNotFoundError):  # a symlink or a socket: its own stat
            return None, os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return None, None
    try:
        st = os.fstat(fd)
        if at is not None:
            _judge_entered(at, st)
        if not stat.S_ISREG(st.st_mode):
            return None, st
        size = st.st_size
        if size > MAX_READ:
            raise _too_big(path, size)
        data = os.read(fd, size + 1)  # one read when the size is still right
        if len(data) > size:
            data = _read_rest(fd, data, path)
        return data, st
    finally:
        os.close(fd)


def read_all(fd: int, size: int, path: str = "a file") -> bytes:
    """Everything from ``fd``, expected to be ``size`` bytes (one read when it is).

    Raises :class:`PathRefused` (EFBIG) when it holds, or grows to, over :data:`MAX_READ`.
    """
    if size > MAX_READ:
        raise _too_big(path, size)
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    return _read_rest(fd, data, path)


def _read_rest(fd: int, data: bytes, path: str) -> bytes:
    """``data``, read first, and the rest of ``fd`` (it grew since its ``fstat``)."""
    chunks, total = [data], len(data)
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_READ:
            raise _too_big(path, total)
    return b"".join(chunks)


def _too_big(path: str, size: int) -> PathRefused:
    return PathRefused(
        errno.EFBIG,
        f"{path} holds {size:,} bytes or more, over the {MAX_READ:,} convergent reads into "
        "memory to compare, edit or copy a file; make it smaller (or remove it), or fetch "
        "large files with download",
    )


def read_regular(at: At) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``at`` (anything else is refused, see open_node)."""
    fd, st = open_node(at, directory=False)
    try:
        return read_all(fd, st.st_size, at.path), st
    finally:
        os.close(fd)


def set_meta(fd: int, mode: int | None, uid: int = -1, gid: int = -1) -> None:
    """chown, then chmod (chown clears setuid bits), through a verified descriptor."""
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)
    if mode is not None:
        os.fchmod(fd, mode)


def default_mode(directory: bool = False) -> int:
    """0666 & ~umask (0777 for a directory): what a new file gets without a mode."""
    if not _umask:
        mask = os.umask(0o022)
        os.umask(mask)
        _umask.append(mask)
    return (0o777 if directory else 0o666) & ~_umask[0]


def make_directory(at: At, mode: int | None, uid: int, gid: int, *, clear: bool) -> None:
    """Create the directory ``at`` (after removing the non-directory there: ``clear``),
    private until its owner and mode are set through its descriptor."""
    if clear:
        os.unlink(at.name, dir_fd=at.fd)
    made = True
    try:
        os.mkdir(at.name, 0o700, dir_fd=at.fd)
    except FileExistsError:
        made = False  # made meanwhile: set only what was asked
    fd, _ = open_node(at, directory=True)
    try:
        set_meta(fd, default_mode(True) if mode is None and made else mode, uid, gid)
    finally:
        os.close(fd)


def remove(at: At, *, tree: bool) -> bool:
    """Remove what is at ``at`` (a directory only when empty, or with ``tree``); False
    when nothing was there. Raises OSError(ENOTEMPTY) for a directory with entries."""
    st = lstat(at)
    if st is None:
        return False
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(at.name, dir_fd=at.fd)
        elif tree:
            import shutil

            shutil.rmtree(at.name, dir_fd=at.fd)
        else:
            os.rmdir(at.name, dir_fd=at.fd)
    except FileNotFoundError:
        return False
    return True
