"""The walk of a path by an agent running as root: systemd's ``chase()`` with
``CHASE_SAFE`` (the rules in :mod:`convergent.host.fs`, which builds on this).

From ``/``, one component at a time with ``openat(O_PATH|O_NOFOLLOW)``; symlinks are
followed here, never by the kernel, and a step from something a non-root user owns into
something another owns (root included) is refused with :class:`PathRefused`, naming
both and how to fix it.

::

    fd = chase.open_directory("/srv/app")   # O_PATH descriptor, every step checked
    os.fchdir(fd)                          # what was checked, whatever the name is now
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["MAX_HOPS", "PathRefused", "check_transition", "open_directory", "walk"]

MAX_HOPS = 32  # symlinks followed in one path, as systemd's CHASE_MAX
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NODE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class PathRefused(OSError):
    """A path convergent will not act on: an unsafe transition, a symlink or special file
    where none may be. ``str()`` is the whole message (what, where, how to fix)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def walk(
    path: str, *, create: bool, follow: bool, keep: bool = False
) -> tuple[int, os.stat_result, str, str, bool]:
    """Walk ``path`` from / (systemd's chase with CHASE_SAFE); see ``fs.locate``.

    Returns the directory descriptor, its stat, the final name, the directory's path and
    whether a symlink was followed. ``keep``: the final component is walked into too (a
    symlink there followed, the step checked) and its own ``O_PATH`` descriptor and stat
    are returned, with its name and its path; a missing one raises FileNotFoundError.
    """
    todo = path.split("/")[::-1]  # a stack: the next component is last
    fd = os.open("/", _DIR)
    st = os.fstat(fd)
    came_from, came_path = st, "/"  # what the next transition is judged from
    where = ""  # the path of fd ("" is /)
    hops = 0
    linked = False
    try:
        while True:
            while todo and todo[-1] in ("", "."):
                todo.pop()
            if not todo:
                if keep:  # "/", "/.", a symlink to ".": the directory walked so far
                    check_transition(came_from, came_path, st, where or "/")
                    return fd, st, ".", where or "/", linked
                raise IsADirectoryError(errno.EISDIR, f"{path} names a directory", path)
            name = todo.pop()
            last = not any(part not in ("", ".") for part in todo)
            if last and name != ".." and not follow and not keep:
                return fd, st, name, where or "/", linked
            here = f"{where}/{name}" if name != ".." else (where.rpartition("/")[0])
            try:
                child = os.open(name, _DIR if name == ".." else _NODE, dir_fd=fd)
            except FileNotFoundError:
                if last and not keep:
                    return fd, st, name, where or "/", linked
                if not create or last:
                    raise FileNotFoundError(
                        errno.ENOENT, "No such file or directory", here
                    ) from None
                mkdir_on_way(fd, name, st)
                child = os.open(name, _NODE, dir_fd=fd)
            cst = os.fstat(child)
            check_transition(came_from, came_path, cst, here or "/")
            if stat.S_ISLNK(cst.st_mode):
                hops += 1
                linked = True
                try:
                    if hops > MAX_HOPS:
                        raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
                    target = os.readlink("", dir_fd=child)
                finally:
                    os.close(child)
                if target.startswith("/"):
                    root = os.open("/", _DIR)
                    os.close(fd)
                    fd = root
                    st = os.fstat(fd)
                    where = ""
                    check_transition(cst, here, st, "/", target)
                came_from, came_path = cst, here
                todo.extend(target.split("/")[::-1])
                continue
            if last and keep:
                os.close(fd)
                return child, cst, name, here or "/", linked
            if last:
                os.close(child)
                return fd, st, name, where or "/", linked
            if not stat.S_ISDIR(cst.st_mode):
                os.close(child)
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", here)
            os.close(fd)
            fd, st, where = child, cst, here
            came_from, came_path = cst, here or "/"
    except BaseException:
        os.close(fd)
        raise


def mkdir_on_way(fd: int, name: str, parent: os.stat_result) -> None:
    """A missing directory on the way (0777 & ~umask, like ``mkdir -p``). Inside a
    user's directory it is given to that user, as they would have made it themselves
    (and as the walk's owner rule then expects)."""
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        return
    if parent.st_uid == 0:
        return
    made = os.open(name, _OPEN | os.O_DIRECTORY, dir_fd=fd)
    try:
        os.fchown(made, parent.st_uid, parent.st_gid)
    finally:
        os.close(made)


def check_transition(
    a: os.stat_result, a_path: str, b: os.stat_result, b_path: str, target: str = ""
) -> None:
    """systemd's unsafe_transition: from a non-root owner only into the same owner.
    ``target``: an absolute symlink's target, whose walk starts at ``b_path`` (/)."""
    if a.st_uid == 0 or a.st_uid == b.st_uid:
        return
    from convergent.host.posix import user_name

    def owner(uid: int) -> str:
        name = user_name(uid)
        return f"uid {uid}" if name == str(uid) else f"{name} (uid {uid})"

    what = "symlink" if stat.S_ISLNK(a.st_mode) else "directory"
    fix = "root" if b.st_uid == 0 else f"root or {owner(b.st_uid)}"
    raise PathRefused(
        errno.EPERM,
        f"unsafe path: the {what} {a_path} is owned by {owner(a.st_uid)} and leads to "
        + (f"{target} (from {b_path}, owned by " if target else f"{b_path} (owned by ")
        + f"{owner(b.st_uid)}); the agent runs as root and never lets "
        f"one user steer it into what another owns. Fix: make {fix} own {a_path}, "
        "replace a symlink by a real directory, or name the real path in the policy",
    )


def open_directory(path: str) -> int:
    """An ``O_PATH`` descriptor of the directory the absolute ``path`` leads to, every
    step checked as :func:`walk` checks it, the last one too (a symlink there is followed
    by the same rules): what a root command's working directory is entered through, so
    that a name swapped after the check does not move it. A trailing ``/`` or ``.`` names
    the same directory; a ``..`` is the parent of the directory reached, as the kernel
    has it (and checked as a step). Raises FileNotFoundError, NotADirectoryError (with
    the path), :class:`PathRefused`, or OSError (ELOOP: too many symlinks)."""
    fd, st, _name, where, _linked = walk(path, create=False, follow=True, keep=True)
    if not stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", where)
    return fd
