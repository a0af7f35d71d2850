"""The state directory: where an agent keeps its state database, one agent at a time.

:func:`open_state_dir` is the one way a run opens it (``convergent run``, the Python API,
the ``convergent state`` commands):

- **One agent per directory.** ``STATE_DIR/lock`` is flock'ed. An agent (``exclusive``)
  takes it exclusively and writes its PID into it; a second agent fails at once with a
  :class:`StateBusy` naming the directory and that PID. Readers (``shared``: ``--noop``
  runs, ``convergent state check``) take no lock on it, so they run beside an agent
  (SQLite's WAL lets them read while it writes); they take ``STATE_DIR/lock.shared``
  shared, as the agent does. Only ``convergent state reset`` and ``restore`` take both
  exclusively: they wait for nobody and are refused while an agent or a reader is there.
  The locks die with their process (kill -9 included) and are not inherited by the
  commands the agent runs (close-on-exec).
- **Never a silent new database.** ``STATE_DIR/initialised`` is written once, after the
  first database was created, checkpointed and fsynced. In an initialised directory a
  missing or empty ``state.db`` is an error, and every open runs ``PRAGMA quick_check``:
  a damaged file is a :class:`StateDamaged` whose message gives the way out
  (``convergent state check | restore | reset --yes``). Secrets are never regenerated
  behind the user's back.
- **A backup of the last good database.** After a successful check an agent copies the
  database with SQLite's backup API into a 0600 temp file in the directory, fsyncs it
  and renames it to ``state.db.backup``; it does so again when it closes, if it wrote
  anything (best effort: if that copy fails, the one of the start remains). The copy is
  the size of the database (convergent's own small records, no file contents): a few
  milliseconds and two fsyncs, saved at a start that finds the backup made after the
  database last changed (its mtime later than the database's mtime and ctime, no WAL
  with transactions in it).

Writes are ordered so that a kill at any point leaves either the old or the new file of
each name (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Literal

from convergent.state.db import (
    STATE_DB,
    StateBusy,
    StateDamaged,
    StateDB,
    StateError,
    _fsync_dir,
    _make_dir,
    fs_hint,
)

__all__ = [
    "BACKUP",
    "LOCK",
    "MARKER",
    "READERS_LOCK",
    "Mode",
    "StateDir",
    "default_state_dir",
    "ensure_state_dir",
    "open_state_dir",
]

LOCK = "lock"  # held exclusively by the agent (and by reset/restore); holds its PID
READERS_LOCK = "lock.shared"  # shared by agent and readers; exclusive for reset/restore
MARKER = "initialised"  # written once, after the first database was made durable
BACKUP = STATE_DB + ".backup"  # the database as it was at the last good start
_FILE_MODE = 0o600

Mode = Literal["exclusive", "shared"]


def default_state_dir(uid: int | None = None, env: Mapping[str, str] | None = None) -> str:
    """``/var/lib/convergent`` for root, else ``$XDG_STATE_HOME/convergent`` or
    ``~/.local/state/convergent`` (a relative ``XDG_STATE_HOME`` is ignored, as the XDG
    specification says)."""
    uid = os.geteuid() if uid is None else uid
    env = os.environ if env is None else env
    if uid == 0:
        return "/var/lib/convergent"
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "convergent")


def ensure_state_dir(path: str) -> str:
    """Create ``path`` (mode 0700, parents as needed) unless it is already a directory.

    An existing directory is left as it is. Raises OSError when it cannot be created or
    exists and is not a directory.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "exists and is not a directory", path) from None
        return path
    os.chmod(path, 0o700)  # exactly 0700, whatever the umask
    return path


class StateDir:
    """An open state directory: its locks and its database (None: a reader found none)."""

    def __init__(self, path: str, mode: Mode, db: StateDB | None, locks: list[int]) -> None:
        self.path = path
        self.mode: Mode = mode
        self.db = db
        self._locks = locks

    def close(self) -> None:
        """Back up what this agent wrote, close the database, release the locks (idempotent)."""
        db, self.db = self.db, None
        try:
            if db is not None:
                try:
                    if self.mode == "exclusive" and db.written:
                        # Best effort: the database itself is durable already, and when
                        # this copy cannot be made the backup of this start remains. The
                        # checkpoint first, so that closing writes nothing more to the
                        # file and the next start finds its backup current.
                        with contextlib.suppress(StateError):
                            db.checkpoint()
                            backup(db, self.path)
                finally:
                    db.close()
        finally:
            locks, self._locks = self._locks, []
            if locks and self.mode == "exclusive":
                with contextlib.suppress(OSError):
                    os.ftruncate(locks[0], 0)  # no PID of a process that has let go
            for fd in locks:
                os.close(fd)  # releases the flock

    def directory(self) -> int:
        """A descriptor of the directory this agent locked, for writing in it by name
        relative to it: opened by path again, then checked to be this user's, written by
        nobody else, and the one that holds this agent's lock file (the path may have
        been swapped since the open). The caller closes it.

        Raises :class:`StateError` when the path is no longer that directory, or when
        this is not an exclusive (agent's) open.
        """
        if self.mode != "exclusive" or not self._locks:
            raise StateError(self.path, "is not held by this agent", what="state directory")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(self.path, "cannot open", exc) from exc
        try:
            info = os.fstat(fd)
            held = os.fstat(self._locks[0])
            try:
                lock = os.stat(LOCK, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                lock = None
            if (
                info.st_uid != os.geteuid()
                or info.st_mode & 0o022
                or lock is None
                or (lock.st_dev, lock.st_ino) != (held.st_dev, held.st_ino)
            ):
                raise StateError(
                    self.path,
                    "is no longer the directory this agent locked (swapped under it)",
                    what="state directory",
                )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def __enter__(self) -> StateDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StateDir {self.path} ({self.mode})>"


def open_state_dir(
    path: str, *, mode: Mode, after_lock: Callable[[str], object] | None = None
) -> StateDir:
    """Open the state directory ``path`` for a run; close the result when the run is over.

    ``exclusive`` (an agent): create the directory (0700) if needed, take its lock, check
    (or create) the database, back it up. ``shared`` (noop, read-only commands): change
    nothing; a directory or database that does not exist yet gives ``db=None``.

    ``after_lock(path)`` runs once the exclusive lock is held and before the database is
    opened: the place for ``convergent.host.process.reap_orphans(path)``, which kills the
    commands a killed agent left behind (the state layer does not import the host layer,
    so the caller passes it).

    Raises :class:`StateBusy` when another convergent holds the directory,
    :class:`StateDamaged` when the database is missing, empty or damaged in a directory
    that was initialised, :class:`StateError` when the directory cannot be used (full or
    read-only file system, permissions); every message names the path and how to fix it.
    """
    path = os.path.abspath(path)
    if mode == "exclusive":
        whole = _refuse_unsafe_parents(path)
        _make_dir(path)
        if not whole:
            # Again, now that every step exists: one a user made in a sticky directory
            # between the first check and the mkdir (a symlink or a directory of hers,
            # taken by makedirs as it found it) is seen now, before anything is written.
            _refuse_unsafe_parents(path)
        _refuse_others(path)
    elif not os.path.isdir(path):
        if os.path.lexists(path):
            raise StateError(
                path, "exists and is not a directory; move it away", what="state directory"
            )
        return StateDir(path, mode, None, [])
    locks: list[int] = []
    try:
        if mode == "exclusive":
            locks.append(lock(path, LOCK, exclusive=True, writer=True, fix=AGENT_THERE))
            _write_pid(path, locks[0])
            locks.append(lock(path, READERS_LOCK, exclusive=False, writer=True, fix=UPKEEP_THERE))
            if after_lock is not None:
                after_lock(path)
        else:
            shared = lock(path, READERS_LOCK, exclusive=False, writer=False, fix=UPKEEP_THERE)
            if shared >= 0:
                locks.append(shared)
        current = mode == "exclusive" and _backup_current(path)
        db = _open_db(path, writable=mode == "exclusive")
        if db is not None and mode == "exclusive" and not current:
            try:
                backup(db, path)
            except BaseException:
                db.close()
                raise
    except BaseException:
        for fd in locks:
            os.close(fd)
        raise
    return StateDir(path, mode, db, locks)


def _refuse_unsafe_parents(path: str) -> bool:
    """Every directory on the way to ``path`` (symlinks followed, as far as it exists)
    belongs to root or this user and is written by nobody else (or is sticky, like
    /tmp): whoever may rename an entry above the state directory could swap it for a
    directory of hers between two of the agent's steps, and read the secrets it writes.

    Returns whether the whole way exists (False: a step is missing, which the caller
    makes and then checks again)."""
    import stat

    uid = os.geteuid()
    todo = path.strip("/").split("/")
    todo.reverse()
    current, hops = "/", 0
    while True:
        try:
            info = os.stat(current)
        except OSError as exc:
            raise _os_error(current, "cannot read", exc) from exc
        writable = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if info.st_uid not in (0, uid) or writable:
            whose = (
                f"belongs to uid {info.st_uid}"
                if info.st_uid not in (0, uid)
                else (f"may be written by other users (mode {stat.S_IMODE(info.st_mode):04o})")
            )
            raise StateError(
                path,
                f"{current} {whose}, who could swap the state directory for one of theirs: "
                "use a state directory whose every parent only root or you may change",
                what="state directory",
            )
        while todo and todo[-1] in ("", "."):
            todo.pop()
        if not todo:
            return True
        name = todo.pop()
        if name == "..":
            current = os.path.dirname(current)
            continue
        step = os.path.join(current, name)
        try:
            entry = os.lstat(step)
        except FileNotFoundError:
            return False  # the rest is made by this agent
        except OSError as exc:
            raise _os_error(step, "cannot read", exc) from exc
        if not stat.S_ISLNK(entry.st_mode):
            while todo and todo[-1] in ("", "."):
                todo.pop()
            if not todo:
                return True  # the state directory itself: _refuse_others checks it
            current = step
            continue
        if entry.st_uid not in (0, uid):
            # In a sticky directory (/tmp) another user's symlink is hers to point
            # elsewhere between two of the agent's steps (the kernel follows it for root
            # unless fs.protected_symlinks is on).
            raise StateError(
                path,
                f"{step} is a symlink of uid {entry.st_uid}, who could point it at a "
                "directory of hers: use a state directory reached only through your own "
                "or root's symlinks",
                what="state directory",
            )
        try:
            link = os.readlink(step)
        except OSError as exc:
            raise _os_error(step, "cannot read", exc) from exc
        hops += 1
        if hops > 40:
            raise StateError(path, "too many levels of symlinks", what="state directory")
        todo.extend(reversed(link.split("/")))
        if link.startswith("/"):
            current = "/"


def _refuse_others(path: str) -> None:
    """An agent's directory is its own: another user who may write in it could swap its
    files (the database holds secrets) between two of the agent's steps."""
    import stat

    try:
        info = os.stat(path)
    except OSError as exc:
        raise _os_error(path, "cannot read", exc) from exc
    uid = os.geteuid()
    if info.st_uid != uid:
        raise StateError(
            path,
            f"belongs to uid {info.st_uid}, not to this user (uid {uid}); whoever owns it "
            f"could swap its files: chown {uid} {path}, or use another state directory",
            what="state directory",
        )
    if info.st_mode & 0o022:
        mode = f"{stat.S_IMODE(info.st_mode):04o}"
        raise StateError(
            path,
            f"may be written by other users (mode {mode}), who could swap its files: "
            f"chmod 0700 {path}, or use another state directory",
            what="state directory",
        )


# -- the locks ---------------------------------------------------------------------------


def lock(path: str, name: str, *, exclusive: bool, writer: bool, fix: str) -> int:
    """flock ``path/name`` without waiting; the descriptor holds it (-1: a reader that
    cannot create the lock file on a file system it may not write, and so goes without).

    Raises :class:`StateBusy` naming the holder and ``fix`` when another process has it.
    """
    file = os.path.join(path, name)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(file, flags, _FILE_MODE)
    except OSError as exc:
        if not writer and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            try:
                fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except FileNotFoundError:
                return -1
            except OSError as again:
                raise _os_error(file, "cannot open the lock file", again) from again
        else:
            raise _os_error(file, "cannot open the lock file", exc) from exc
    try:
        if not os.path.samestat(os.fstat(fd), os.lstat(file)) or not _regular(fd):
            raise StateError(file, "is not a regular file; move it away", what="state file")
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(path, fix) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def holder(path: str) -> int | None:
    """The PID written into ``path/lock`` by the process that holds it, if any."""
    try:
        fd = os.open(os.path.join(path, LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


AGENT_THERE = "stop it, or use another state directory"
READERS_THERE = (
    "a run under noop or `convergent state check` is reading it: wait until it is done, then "
    "run this again"
)
UPKEEP_THERE = "it is being reset or restored: wait until that is done"


def _busy(path: str, fix: str) -> StateBusy:
    pid = holder(path) if fix != READERS_THERE else None
    if pid == os.getpid():
        pid = None
    who = "another convergent" if pid is None else f"another convergent (pid {pid}{_cmd(pid)})"
    return StateBusy(path, f"state directory {path} is in use by {who}; {fix}", pid)


def _cmd(pid: int) -> str:
    """``: convergent run policy.yaml``: what process ``pid`` runs, or nothing."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read(4096).rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    if len(args) > 2 and args[1:3] == [b"-m", b"convergent"]:
        args = [b"convergent", *args[3:]]
    text = " ".join(a.decode(errors="replace") for a in args)
    return f": {text}" if text.isprintable() else ""


def _write_pid(path: str, fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        raise _os_error(os.path.join(path, LOCK), "cannot write the lock file", exc) from exc


def _regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _os_error(file: str, action: str, exc: OSError) -> StateError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason += " (run as the directory's owner, or use another one)"
    else:
        reason += fs_hint(file)
    what = "state database" if os.path.basename(file).startswith(STATE_DB) else "state file"
    return StateError(file, f"{action}: {reason}", what=what)


# -- the database, its marker and its backup ----------------------------------------------


def _open_db(path: str, *, writable: bool) -> StateDB | None:
    """The checked database; a new one only where the directory was never initialised."""
    file = os.path.join(path, STATE_DB)
    initialised = os.path.lexists(os.path.join(path, MARKER))
    try:
        size: int | None = os.stat(file).st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise _os_error(file, "cannot read", exc) from exc
    if initialised and size is None:
        raise StateDamaged(file, "is missing, though this state directory was initialised")
    if initialised and size == 0:
        raise StateDamaged(file, "is empty (0 bytes), though this state directory was initialised")
    if not size:  # a new directory (or a first start killed before the marker)
        if not writable:
            return None
        db = StateDB(file)
        try:
            db.checkpoint()
            _write_marker(path)
        except BaseException:
            db.close()
            raise
        return db
    db = StateDB(file, readonly=not writable)
    try:
        problem = db.quick_check()
        if problem is not None:
            raise StateDamaged(file, f"is damaged: SQLite's quick_check found {problem}")
        if writable and not initialised:  # made by a convergent older than the marker
            _write_marker(path)
    except BaseException:
        db.close()
        raise
    return db


def _backup_current(path: str) -> bool:
    """True when ``state.db.backup`` was made after the database last changed: written
    after the database's last modification and last inode change (a ctime nobody can set
    back) and no WAL with transactions in it beside the database. Then a start need not
    copy it again (the quick check still runs)."""
    file = os.path.join(path, STATE_DB)
    try:
        copy = os.stat(os.path.join(path, BACKUP), follow_symlinks=False)
        db = os.stat(file, follow_symlinks=False)
    except OSError:
        return False
    try:
        if os.stat(file + "-wal", follow_symlinks=False).st_size:
            return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return copy.st_mtime_ns > max(db.st_mtime_ns, db.st_ctime_ns) and copy.st_size > 0


def _write_marker(path: str) -> None:
    """Write ``path/initialised`` durably (temp file, fsync, rename, fsync the directory)."""
    text = (
        "This state directory was initialised: its state.db must exist. If it is lost\n"
        "or damaged, see `convergent state check`.\n"
    )
    _durable_file(path, MARKER, lambda tmp: _write_text(tmp, text))


def backup(db: StateDB, path: str) -> None:
    """Copy ``db`` into ``path/state.db.backup`` (0600 temp file, fsync, rename)."""
    _durable_file(path, BACKUP, db.backup)


def _write_text(file: str, text: str) -> None:
    with open(file, "w", encoding="utf-8") as f:
        f.write(text)


def _durable_file(path: str, name: str, fill: Callable[[str], None]) -> None:
    """Make ``path/name`` anew: ``fill`` writes a 0600 temp file, renamed once fsynced."""
    final = os.path.join(path, name)
    tmp = os.path.join(path, f".{name}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a killed agent; only the lock holder writes it
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE))
        fill(tmp)
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _os_error(final, "cannot write", exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path)
