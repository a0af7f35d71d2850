"""``file``: a regular file with given content, mode and owner; a directory; or nothing.

::

    - file: /etc/motd
      content: "welcome\\n"
      mode: "0644"
      owner: root

- ``state: exists`` (the default) means a regular file. A symlink, fifo or other
  special file at the path is replaced by one; a directory only with ``force: true``.
- Content is written atomically: a temporary file in the same directory, written,
  chowned, chmodded, fsynced and renamed over the path, so no reader ever sees a
  half-written or empty file. Content that is already right is never rewritten.
- The fsyncs and renames of the files written in one pass of the event loop are done
  together (:class:`_Commits`): each file is still fsynced before it is renamed, but the
  file system writes the shared directory and inode table blocks once per batch instead
  of once per file.
- Without ``mode`` a new file gets 0666 & ~umask (a directory 0777 & ~umask) and an
  existing file keeps its mode (and owner) when its content is rewritten.
- ``check`` costs one lstat and at most one read of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Callable, Sequence
from typing import Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.fswatch import FsWatcher

__all__ = ["File", "FileChange", "FileParams"]

DIFF_LIMIT = 1 << 20  # bytes; larger content gets a one-line note instead of a diff
_OCTAL = frozenset("01234567")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID  # cleared by chown, so chmod comes after it
_temp_names = itertools.count()
COMMIT_BATCH = 128  # written temp files (and their descriptors) waiting at most per batch
_KIND_NAMES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class FileParams(Params, frozen=True):
    """A regular file with the given content, a directory, or nothing at a path.

    path: absolute path of the file or directory (default: the resource name)
    content: the file's content, written as UTF-8 (exclusive with source)
    source: absolute path of a local file whose bytes are copied (exclusive with content)
    state: exists (a regular file), absent, or directory
    mode: permission bits as an octal string of 3 or 4 digits, like "0644" or "644"
    owner: user name or numeric uid (default: left as it is; new files belong to the agent)
    group: group name or numeric gid (default: left as it is)
    force: replace a directory by a file (or anything by a directory), remove non-empty dirs
    """

    path: str | None = None
    content: str | None = None
    source: str | None = None
    state: Literal["exists", "absent", "directory"] = "exists"
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    force: bool = False


class FileChange(Change):
    """What ``check`` found, and what ``apply`` needs to make it right.

    ``action``: write (atomic content write), meta (chmod/chown only), mkdir or remove.
    ``mode``/``uid``/``gid``: what to set (None / -1: leave alone). ``clear``: something of
    another kind is at the path and goes first (``tree``: a directory with entries).
    A plain subclass (not a dataclass, which costs import time): equality and repr are
    Change's, on summary and diff. A content diff is made on first use of ``diff``
    (:meth:`diff_later`): a run that only reports summaries never imports difflib, which
    alone costs ~14 ms, nor spends ~12 us per created file on it.
    """

    def __init__(
        self,
        summary: str,
        diff: str | None = None,
        action: Literal["write", "meta", "mkdir", "remove"] = "meta",
        data: bytes = b"",
        mode: int | None = None,
        uid: int = -1,
        gid: int = -1,
        clear: bool = False,
        tree: bool = False,
    ) -> None:
        self._diff: str | None = diff
        self._diff_of: tuple[str, bytes, bytes, bool] | None = None
        super().__init__(summary, diff)
        self.action = action
        self.data = data
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.clear = clear
        self.tree = tree

    @property
    def diff(self) -> str | None:
        later = self._diff_of
        if later is not None:
            self._diff_of = None
            self._diff = _diff(later[0], later[1], later[2], created=later[3])
        return self._diff

    @diff.setter
    def diff(self, value: str | None) -> None:
        self._diff_of = None
        self._diff = value

    def diff_later(self, path: str, old: bytes, new: bytes, *, created: bool) -> FileChange:
        """Make ``diff`` from these contents when it is first read; returns self."""
        if len(old) > DIFF_LIMIT or len(new) > DIFF_LIMIT:  # hold no large content
            self.diff = _diff(path, old, new, created=created)
        else:
            self._diff_of = (path, old, new, created)
        return self


class File(Resource[FileParams], kind="file"):
    """See the module docstring; parameters are documented on :class:`FileParams`."""

    __slots__ = ("_base", "_data", "_gid", "_mode", "_parent", "_path", "_source", "_uid")

    _path: str
    _parent: str
    _base: str
    _data: bytes | None
    _source: str | None
    _mode: int | None
    _uid: int | None
    _gid: int | None

    # -- parameters -------------------------------------------------------------------

    def validate(self) -> None:
        p = self.params
        if p.path is None and not self.name.startswith("/"):
            raise ParamError(
                "path",
                f"must be an absolute path, got the resource name {self.name!r}; "
                "name the resource by its absolute path or give path",
            )
        self._path = _absolute("path", p.path if p.path is not None else self.name)
        if p.state != "directory" and self._path == "/":
            raise ParamError("path", f"/ cannot be managed with state: {p.state}")
        head, _, self._base = self._path.rpartition("/")
        self._parent = head or "/"
        if p.content is not None and p.source is not None:
            raise ParamError("source", "content and source are exclusive: give one of them")
        self._source = _absolute("source", p.source) if p.source is not None else None
        if self._source == self._path:
            raise ParamError("source", f"source is the file itself ({self._path})")
        self._data = p.content.encode() if p.content is not None else None
        if p.state != "exists":
            for name in ("content", "source"):
                if getattr(p, name) is not None:
                    raise ParamError(name, f"only applies to state: exists, not state: {p.state}")
        if p.state == "absent":
            for name in ("mode", "owner", "group"):
                if getattr(p, name) is not None:
                    raise ParamError(name, "has no meaning with state: absent; remove it")
        self._mode = _parse_mode(p.mode) if p.mode is not None else None
        self._uid = _parse_id("owner", p.owner)
        self._gid = _parse_id("group", p.group)

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the path (and ``source``) with the run's shared inotify descriptor: no
        task of its own (the ``Subscribes`` ability)."""
        watcher = ctx.shared(FsWatcher)
        stop = watcher.watch(self._path, ctx.event)
        if self._source is None:
            ctx.ready()
            return stop
        try:
            stop_source = watcher.watch(self._source, ctx.event)
        except BaseException:
            stop()
            raise
        ctx.ready()

        def unsubscribe() -> None:
            stop()
            stop_source()

        return unsubscribe

    async def check(self, ctx: Context) -> FileChange | None:
        return self.plan()

    async def apply(self, ctx: Context, change: Change) -> str | None:
        if not isinstance(change, FileChange):
            planned = self.plan()
            if planned is None:
                return None
            change = planned
        if change.action == "write":
            fd, temp = self._write_temp(change)
            await ctx.shared(_Commits).commit(fd, temp, self._path, change.tree)
        elif change.action == "meta":
            self._set_meta(self._path, change)
        elif change.action == "mkdir":
            self._mkdir(change)
        else:
            self._remove(change)
        return None

    # -- check ------------------------------------------------------------------------

    def plan(self) -> FileChange | None:
        """Compare the file system with the parameters (read only); None when right."""
        path = self._path
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        except NotADirectoryError:
            if self.params.state == "absent":
                return None
            raise ResourceError(self.id, self._blocked_message()) from None
        state = self.params.state
        if state == "exists":
            return self._plan_file(st)
        if state == "directory":
            return self._plan_directory(st)
        return self._plan_absent(st)

    def _plan_file(self, st: os.stat_result | None) -> FileChange | None:
        path = self._path
        if st is None:
            data = self._wanted()
            uid, gid = self._owner_ids()
            change = FileChange("created", None, "write", data, self._mode, uid, gid)
            return change.diff_later(path, b"", data, created=True) if data else change
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFREG:
            if kind == stat.S_IFDIR and not self.params.force:
                raise ResourceError(
                    self.id,
                    f"{path} is a directory; set force: true to replace it (and everything "
                    "in it) with a file",
                )
            data = self._wanted()
            uid, gid = self._owner_ids()
            summary = f"replaced {_KIND_NAMES.get(kind, 'special file')} with file"
            tree = kind == stat.S_IFDIR
            change = FileChange(summary, None, "write", data, self._mode, uid, gid, tree, tree)
            return change.diff_later(path, b"", data, created=True) if data else change
        parts: list[str] = []
        old = data = b""
        write = False
        wanted = self._wanted() if self._data is not None or self._source is not None else None
        if wanted is not None:
            old = _read(path, st.st_size)
            if old != wanted:
                write = True
                data = wanted
                parts.append("content changed")
        old_mode = stat.S_IMODE(st.st_mode)
        mode = self._mode
        if mode is not None and mode != old_mode:
            parts.append(f"mode {old_mode:04o} -> {mode:04o}")
        else:
            mode = None
        uid, gid = self._owner_ids()
        if uid != -1 and uid != st.st_uid:
            parts.append(f"owner {self._user(st.st_uid)} -> {self._user(uid)}")
        else:
            uid = -1
        if gid != -1 and gid != st.st_gid:
            parts.append(f"group {self._group(st.st_gid)} -> {self._group(gid)}")
        else:
            gid = -1
        if not parts:
            return None
        summary = ", ".join(parts)
        if write:
            # A new inode replaces the file: carry over whatever is not being changed.
            return FileChange(
                summary,
                None,
                "write",
                data,
                old_mode if mode is None else mode,
                st.st_uid if uid == -1 else uid,
                st.st_gid if gid == -1 else gid,
            ).diff_later(path, old, data, created=False)
        if mode is None and (uid != -1 or gid != -1) and old_mode & _SPECIAL_BITS:
            mode = old_mode  # chown clears setuid/setgid: put them back
        return FileChange(summary, None, "meta", b"", mode, uid, gid)

    def _plan_directory(self, st: os.stat_result | None) -> FileChange | None:
        path = self._path
        uid, gid = self._owner_ids()
        if st is None:
            return FileChange("directory created", None, "mkdir", b"", self._mode, uid, gid)
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFDIR:
            what = _KIND_NAMES.get(kind, "special file")
            if not self.params.force:
                raise ResourceError(
                    self.id, f"{path} is a {what}; set force: true to replace it with a directory"
                )
            summary = f"replaced {what} with directory"
            return FileChange(summary, None, "mkdir", b"", self._mode, uid, gid, clear=True)
        parts: list[str] = []
        old_mode = stat.S_IMODE(st.st_mode)
        mode = self._mode
        if mode is not None and mode != old_mode:
            parts.append(f"mode {old_mode:04o} -> {mode:04o}")
        else:
            mode = None
        if uid != -1 and uid != st.st_uid:
            parts.append(f"owner {self._user(st.st_uid)} -> {self._user(uid)}")
        else:
            uid = -1
        if gid != -1 and gid != st.st_gid:
            parts.append(f"group {self._group(st.st_gid)} -> {self._group(gid)}")
        else:
            gid = -1
        if not parts:
            return None
        if mode is None and (uid != -1 or gid != -1) and old_mode & _SPECIAL_BITS:
            mode = old_mode
        return FileChange(", ".join(parts), None, "meta", b"", mode, uid, gid)

    def _plan_absent(self, st: os.stat_result | None) -> FileChange | None:
        if st is None:
            return None
        tree = False
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(self._path) as entries:
                tree = next(entries, None) is not None
            if tree and not self.params.force:
                raise ResourceError(
                    self.id,
                    f"{self._path} is a directory that is not empty; set force: true to "
                    "remove it with everything in it",
                )
        return FileChange("removed", None, "remove", clear=True, tree=tree)

    def _wanted(self) -> bytes:
        """The content the file should have (empty when neither content nor source)."""
        if self._data is not None:
            return self._data
        source = self._source
        if source is None:
            return b""
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ResourceError(
                self.id, f"source {source} does not exist; create it or fix source"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ResourceError(self.id, f"source {source} is not a regular file")
            return _read_fd(fd, st.st_size)
        finally:
            os.close(fd)

    def _owner_ids(self) -> tuple[int, int]:
        """The uid and gid asked for (-1: not asked), resolving names on first use."""
        p = self.params
        if self._uid is None:
            self._uid = -1 if p.owner is None else _lookup_id(self.id, "owner", p.owner)
        if self._gid is None:
            self._gid = -1 if p.group is None else _lookup_id(self.id, "group", p.group)
        return self._uid, self._gid

    def _user(self, uid: int) -> str:
        """How to show ``uid``: as a name when the owner was given as a name."""
        owner = self.params.owner
        if owner is None or owner.isdigit():
            return str(uid)
        import pwd

        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    def _group(self, gid: int) -> str:
        group = self.params.group
        if group is None or group.isdigit():
            return str(gid)
        import grp

        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return str(gid)

    def _blocked_message(self) -> str:
        """Say which ancestor of the path is not a directory."""
        parts = self._path.split("/")[1:]
        current = ""
        for part in parts[:-1]:
            current += "/" + part
            if not os.path.isdir(current):
                return (
                    f"cannot manage {self._path}: {current} is not a directory; remove it "
                    "or manage it with state: directory"
                )
        return f"cannot manage {self._path}: a parent is not a directory"

    # -- apply ------------------------------------------------------------------------

    def _write_temp(self, change: FileChange) -> tuple[int, str]:
        """A new temp file next to the path with the content, owner and mode; still open.

        :meth:`_Commits.commit` fsyncs it, closes it and renames it over the path.
        """
        parent = self._parent
        prefix = parent if parent != "/" else ""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        made_parents = False
        fd = -1
        while fd < 0:
            temp = f"{prefix}/.{self._base[:40]}.{os.getpid()}.{next(_temp_names)}.tmp"
            try:
                fd = os.open(temp, flags, 0o666)
            except FileExistsError:
                continue  # left over by a crashed run with the same pid: take the next name
            except FileNotFoundError:
                if made_parents:
                    raise
                os.makedirs(parent, exist_ok=True)  # 0777 & ~umask, like mkdir -p
                made_parents = True
        try:
            view = memoryview(change.data)
            while view:
                view = view[os.write(fd, view) :]
            if change.uid != -1 or change.gid != -1:
                os.fchown(fd, change.uid, change.gid)
            if change.mode is not None:
                os.fchmod(fd, change.mode)
        except BaseException:
            os.close(fd)
            _discard(temp)
            raise
        return fd, temp

    def _set_meta(self, path: str, change: FileChange) -> None:
        if change.uid != -1 or change.gid != -1:
            os.chown(path, change.uid, change.gid, follow_symlinks=False)
        if change.mode is not None:
            os.chmod(path, change.mode)

    def _mkdir(self, change: FileChange) -> None:
        path = self._path
        if change.clear:
            os.unlink(path)
        os.makedirs(path, exist_ok=True)
        self._set_meta(path, change)

    def _remove(self, change: FileChange) -> None:
        path = self._path
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
            elif self.params.force:
                import shutil

                shutil.rmtree(path)
            else:
                os.rmdir(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:  # filled since check
                raise ResourceError(
                    self.id,
                    f"{path} is a directory that is not empty; set force: true to remove it "
                    "with everything in it",
                ) from exc
            raise

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str]:
        """The path it manages, as ``file:<path>``."""
        return (f"file:{self._path}",)

    def needs(self) -> tuple[tuple[str], Sequence[str]]:
        """Whatever else provides its own path (a package shipping it, a command creating
        it) comes first; then its nearest managed ancestor directory, not every ancestor."""
        return (f"file:{self._path}",), path_uids("file:", self._path)

    # -- reversal (meta: {reverse: true}) ------------------------------------------------
    # Before the first change the engine calls record_reverse, which keeps in the state
    # database (key/value "reverse:file[PATH]") either "created" (nothing was at the path)
    # or what was there: a regular file's content, mode, owner and group, or a directory's
    # mode, owner and group. When the resource leaves the graph, reverse() removes what it
    # created or puts the recorded content and metadata back, then forgets the record. A
    # symlink or special file it replaced is not recorded, and so not restored.

    def record_reverse(self, ctx: Context, change: Change) -> None:
        """Keep how to undo the first change (later changes keep the first record)."""
        state = ctx.state
        if state is None or state.readonly:
            return
        key = f"reverse:{self.id}"
        if state.get_kv(key) is not None:
            return
        try:
            st = os.lstat(self._path)
        except (FileNotFoundError, NotADirectoryError):
            state.set_kv(key, "created")
            return
        record: dict[str, object] = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
        if stat.S_ISREG(st.st_mode):
            import base64

            record["content"] = base64.b64encode(_read(self._path, st.st_size)).decode()
        elif not stat.S_ISDIR(st.st_mode):
            return
        import json

        state.set_kv(key, json.dumps(record))

    def plan_reverse(self, ctx: Context) -> str | None:
        """What :meth:`reverse` would do (read only), or None."""
        record = ctx.state.get_kv(f"reverse:{self.id}") if ctx.state is not None else None
        if record is None:
            return None
        if record == "created":
            return f"remove {self._path}" if os.path.lexists(self._path) else None
        return f"restore {self._path}"

    async def reverse(self, ctx: Context) -> str | None:
        """Undo what this resource did (see above); None when there is nothing to undo."""
        state = ctx.state
        key = f"reverse:{self.id}"
        record = state.get_kv(key) if state is not None else None
        if state is None or record is None:
            return None
        summary: str | None
        if record == "created":
            summary = None
            if self.plan_reverse(ctx) is not None:
                self._remove(FileChange("removed", None, "remove"))
                summary = "removed"
        else:
            import json

            saved = json.loads(record)
            mode, uid, gid = saved["mode"], saved["uid"], saved["gid"]
            if "content" in saved:
                import base64

                data = base64.b64decode(saved["content"])
                restore = FileChange("restored", None, "write", data, mode, uid, gid)
                await self.apply(ctx, restore)
                summary = "restored content, mode and owner"
            else:
                self._set_meta(
                    self._path, FileChange("restored", None, "meta", b"", mode, uid, gid)
                )
                summary = "restored mode and owner"
        state.set_kv(key, None)
        return summary


class _Commits:
    """Written temp files waiting for their fsync and rename; one instance per engine run.

    :meth:`commit` queues a temp file and returns once it is fsynced and renamed over its
    path. The queue is flushed by a callback scheduled when its first file arrives, so
    every file written in the same pass of the event loop goes in one batch (or as soon
    as :data:`COMMIT_BATCH` are waiting, which bounds the open descriptors): all of them
    are fsynced, then renamed, in order. Measured on ext4, writing 1,000 new files with
    fsync takes about half the time this way, because the directory block and the inode
    table blocks the files share are written once per batch instead of once per file.
    Each file still has its own fsync before its own rename, so a crash leaves either the
    old file or the whole new one, never a torn one. A file whose ``commit`` was cancelled
    before the flush is discarded: its path is left as it was.
    """

    __slots__ = ("_scheduled", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[_Temp] = []
        self._scheduled = False

    async def commit(self, fd: int, temp: str, path: str, tree: bool) -> None:
        """fsync and close ``fd`` (the written ``temp``), then rename ``temp`` to ``path``.

        ``tree``: ``path`` is a directory, removed with everything in it just before the
        rename. Raises what the fsync, close, removal or rename raised (``temp`` is gone).
        """
        loop = asyncio.get_running_loop()
        item = _Temp(fd, temp, path, tree, loop.create_future())
        self._waiting.append(item)
        if len(self._waiting) >= COMMIT_BATCH:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        await item.done

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """fsync every waiting file, then rename each; each caller gets its own outcome."""
        waiting, self._waiting = self._waiting, []
        synced: list[_Temp] = []
        for n, item in enumerate(waiting):
            try:
                if item.sync():
                    synced.append(item)
            except BaseException:
                for rest in waiting[n + 1 :]:
                    rest.drop(opened=True)
                for rest in synced:
                    rest.drop(opened=False)
                raise
        for n, item in enumerate(synced):
            try:
                item.rename()
            except BaseException:
                for rest in synced[n + 1 :]:
                    rest.drop(opened=False)
                raise

    def close(self) -> None:
        """End of the run: discard the files whose commit never ran (cancelled applies)."""
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            item.drop(opened=True)


class _Temp:
    """One written temp file on its way to ``path``; ``done`` tells its ``commit``."""

    __slots__ = ("done", "fd", "path", "temp", "tree")

    def __init__(self, fd: int, temp: str, path: str, tree: bool, done: asyncio.Future[None]):
        self.fd = fd
        self.temp = temp
        self.path = path
        self.tree = tree
        self.done = done

    def sync(self) -> bool:
        """fsync and close; False when it failed or was cancelled (then it is discarded)."""
        try:
            try:
                if self.done.cancelled():
                    _discard(self.temp)
                    return False
                os.fsync(self.fd)
            finally:
                os.close(self.fd)
        except Exception as exc:
            self._fail(exc)
            return False
        except BaseException:
            self.drop(opened=False)
            raise
        return True

    def rename(self) -> None:
        """Put the synced temp file in place (after removing a directory tree there)."""
        try:
            if self.tree:
                import shutil

                shutil.rmtree(self.path)
            os.replace(self.temp, self.path)
        except Exception as exc:
            self._fail(exc)
            return
        except BaseException:
            self.drop(opened=False)
            raise
        if not self.done.done():
            self.done.set_result(None)

    def drop(self, *, opened: bool) -> None:
        """Discard the temp file (closing it first when it is still ``opened``)."""
        if opened:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        _discard(self.temp)
        if not self.done.done():
            self.done.cancel()

    def _fail(self, exc: Exception) -> None:
        _discard(self.temp)
        if not self.done.done():
            self.done.set_exception(exc)


def _discard(temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


def _absolute(field_name: str, path: str) -> str:
    """Normalise an absolute path; reject a relative one."""
    if not path.startswith("/"):
        raise ParamError(field_name, f"must be an absolute path (starting with /), got {path!r}")
    if "\0" in path:
        raise ParamError(field_name, "must not contain a NUL character")
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/")


def _parse_mode(mode: str) -> int:
    if len(mode) not in (3, 4) or not _OCTAL.issuperset(mode):
        raise ParamError(
            "mode", f'expected an octal string of 3 or 4 digits like "0644" or "644", got {mode!r}'
        )
    return int(mode, 8)


def _parse_id(field_name: str, value: str | None) -> int | None:
    """A numeric uid/gid now; None for a name (resolved by check) or when not given."""
    if value is None:
        return None
    if not value:
        raise ParamError(field_name, "must be a name or a numeric id, not empty")
    if value.isascii() and value.isdigit():
        return int(value)
    return None


def _lookup_id(resource: str, field_name: Literal["owner", "group"], name: str) -> int:
    """The uid (``owner``) or gid (``group``) of ``name`` on this host."""
    try:
        if field_name == "owner":
            import pwd

            return pwd.getpwnam(name).pw_uid
        import grp

        return grp.getgrnam(name).gr_gid
    except KeyError:
        what, number = ("user", "uid") if field_name == "owner" else ("group", "gid")
        raise ResourceError(
            resource,
            f"{field_name}: there is no {what} {name!r} on this host; create the {what} "
            f"first (and require it) or give a numeric {number}",
        ) from None


def _read(path: str, size: int) -> bytes:
    """The bytes of the regular file at ``path`` (expected to be ``size`` long)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return _read_fd(fd, size)
    finally:
        os.close(fd)


def _read_fd(fd: int, size: int) -> bytes:
    data = os.read(fd, size + 1)  # one read when the size is still right
    if len(data) <= size:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _diff(path: str, old: bytes, new: bytes, *, created: bool) -> str:
    """A unified diff of two contents, or a one-line note for binary or large content."""
    if len(old) > DIFF_LIMIT or len(new) > DIFF_LIMIT:
        return f"content differs ({len(old)} -> {len(new)} bytes; too large to show a diff)"
    if b"\0" in old or b"\0" in new:
        return "binary content differs"
    try:
        old_text, new_text = old.decode(), new.decode()
    except UnicodeDecodeError:
        return "binary content differs"
    import difflib

    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        "/dev/null" if created else path,
        path,
    )
    out: list[str] = []
    for line in lines:
        out.append(line)
        if not line.endswith("\n"):
            out.append("\n\\ No newline at end of file\n")
    return "".join(out)
