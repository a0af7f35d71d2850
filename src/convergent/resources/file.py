"""``file``: a regular file with given content, mode and owner; a directory; or nothing.

::

    - file: /etc/motd
      content: "welcome\\n"
      mode: "0644"
      owner: root

- ``state: exists`` (the default) means a regular file. A symlink at the path is
  replaced by one when content or source is given (with neither, a symlink is an error
  naming it: the resource never destroys content it was not asked to manage); a
  directory, fifo, socket or device only with ``force: true``. A FIFO is never opened.
- Every path is resolved and changed through :mod:`convergent.host.fs`: parents by
  systemd's ``CHASE_SAFE`` rules (a user's symlink never steers the agent into another
  owner's directory), the final name never followed, modes and owners changed only
  through a verified descriptor.
- Content is written atomically (:mod:`convergent.host.atomic`): a private temp file in
  the same directory, chowned before the first byte, written, chmodded, fsynced and
  renamed over the path, so no reader ever sees a half-written or empty file. Content
  that is already right is never rewritten. The fsyncs and renames of the files written
  in one pass of the event loop are done together. Temp files a killed agent left for
  this path are removed at the next write.
- Without ``mode`` a new file gets 0666 & ~umask (a directory 0777 & ~umask) and an
  existing file keeps its mode (and owner) when its content is rewritten.
- ``check`` costs one ``openat2`` and one ``fstatat``, and at most one read of the file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from typing import Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.host import atomic, fs, posix
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.fswatch import FsWatcher

__all__ = ["File", "FileChange", "FileParams"]

DIFF_LIMIT = 1 << 20  # bytes; larger content gets a one-line note instead of a diff
_OCTAL = frozenset("01234567")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID  # cleared by chown, so chmod comes after it


class FileParams(Params, frozen=True):
    """A regular file with the given content, a directory, or nothing at a path.

    path: absolute path of the file or directory (default: the resource name)
    content: the file's content, written as UTF-8 (exclusive with source)
    source: absolute path of a local file whose bytes are copied (exclusive with content)
    state: exists (a regular file), absent, or directory
    mode: permission bits as an octal string of 3 or 4 digits, like "0644" or "644"
    owner: user name or numeric uid, 0-4294967294 (default: left as it is; new files: the agent's)
    group: group name or numeric gid 0-4294967294 (default: left as it is)
    force: replace a dir or fifo/socket/device by a file, anything by a dir; remove non-empty dirs
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

    __slots__ = ("_data", "_gid", "_mode", "_path", "_source", "_uid")

    _path: str
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
        self._uid = posix.parse_id("owner", p.owner)
        self._gid = posix.parse_id("group", p.group)

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
        try:
            return self.plan()
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self._error(exc) from None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        try:
            if not isinstance(change, FileChange):
                planned = self.plan()
                if planned is None:
                    return None
                change = planned
            if change.action == "write":
                await self._write(ctx, change)
            elif change.action == "meta":
                with fs.locate(self._path) as at:
                    self._set_meta(at, change)
            elif change.action == "mkdir":
                with fs.locate(self._path, create=True) as at:
                    fs.make_directory(at, change.mode, change.uid, change.gid, clear=change.clear)
            else:
                self._remove()
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self._error(exc) from None
        return None

    def _error(self, exc: fs.PathRefused | posix.NoSuchName) -> ResourceError:
        if isinstance(exc, posix.NoSuchName):
            field = "owner" if exc.what == "user" else "group"
            return ResourceError(self.id, f"{field}: {exc.message}")
        return ResourceError(self.id, exc.message)

    # -- check ------------------------------------------------------------------------

    def plan(self) -> FileChange | None:
        """Compare the file system with the parameters (read only); None when right."""
        state = self.params.state
        try:
            at = fs.locate(self._path)
        except FileNotFoundError:  # a parent is missing
            return None if state == "absent" else self._plan_missing()
        except NotADirectoryError as exc:
            if state == "absent":
                return None
            raise ResourceError(
                self.id,
                f"cannot manage {self._path}: {exc.filename} is not a directory; remove it "
                "or manage it with state: directory",
            ) from None
        with at:
            old: bytes | None = None
            if state == "exists" and (self._data is not None or self._source is not None):
                old, st = fs.read_if_regular(at)  # one open: a regular file is read at once
            else:
                st = fs.lstat(at)
            if st is None:
                return None if state == "absent" else self._plan_missing()
            if state == "exists":
                return self._plan_file(st, old)
            if state == "directory":
                return self._plan_directory(st)
            return self._plan_absent(at, st)

    def _plan_missing(self) -> FileChange:
        uid, gid = self._owner_ids()
        if self.params.state == "directory":
            return FileChange("directory created", None, "mkdir", b"", self._mode, uid, gid)
        data = self._wanted()
        change = FileChange("created", None, "write", data, self._mode, uid, gid)
        return change.diff_later(self._path, b"", data, created=True) if data else change

    def _plan_file(self, st: os.stat_result, old: bytes | None) -> FileChange | None:
        path = self._path
        kind = stat.S_IFMT(st.st_mode)
        wanted = self._wanted() if self._data is not None or self._source is not None else None
        if kind != stat.S_IFREG:
            what = fs.kind_name(st.st_mode)
            if kind == stat.S_IFLNK and wanted is None:
                raise ResourceError(
                    self.id,
                    f"{path} is a symlink; a file without content or source never replaces "
                    "it (nor follows it): remove the link, or give content or source",
                )
            if kind != stat.S_IFLNK and not self.params.force:
                raise ResourceError(
                    self.id,
                    f"{path} is a {what}; set force: true to replace it"
                    f"{' (and everything in it)' if kind == stat.S_IFDIR else ''} with a file",
                )
            uid, gid = self._owner_ids()
            data = b"" if wanted is None else wanted
            tree = kind == stat.S_IFDIR
            change = FileChange(
                f"replaced {what} with file", None, "write", data, self._mode, uid, gid, tree, tree
            )
            return change.diff_later(path, b"", data, created=True) if data else change
        parts: list[str] = []
        if wanted is not None and old != wanted:
            parts.append("content changed")
        mode, uid, gid = self._meta(st, parts)
        if not parts:
            return None
        summary = ", ".join(parts)
        if wanted is not None and old != wanted:
            # A new inode replaces the file: carry over whatever is not being changed.
            return FileChange(
                summary,
                None,
                "write",
                wanted,
                stat.S_IMODE(st.st_mode) if mode is None else mode,
                st.st_uid if uid == -1 else uid,
                st.st_gid if gid == -1 else gid,
            ).diff_later(path, old or b"", wanted, created=False)
        return FileChange(summary, None, "meta", b"", mode, uid, gid)

    def _plan_directory(self, st: os.stat_result) -> FileChange | None:
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFDIR:
            what = fs.kind_name(st.st_mode)
            if not self.params.force:
                raise ResourceError(
                    self.id,
                    f"{self._path} is a {what}; set force: true to replace it with a directory",
                )
            uid, gid = self._owner_ids()
            summary = f"replaced {what} with directory"
            return FileChange(summary, None, "mkdir", b"", self._mode, uid, gid, clear=True)
        parts: list[str] = []
        mode, uid, gid = self._meta(st, parts)
        return FileChange(", ".join(parts), None, "meta", b"", mode, uid, gid) if parts else None

    def _meta(self, st: os.stat_result, parts: list[str]) -> tuple[int | None, int, int]:
        """The mode, uid and gid to set on what ``st`` describes (None / -1: leave it),
        each difference described in ``parts``."""
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
        if mode is None and (uid != -1 or gid != -1) and old_mode & _SPECIAL_BITS:
            mode = old_mode  # chown clears setuid/setgid: put them back
        return mode, uid, gid

    def _plan_absent(self, at: fs.At, st: os.stat_result) -> FileChange:
        tree = False
        if stat.S_ISDIR(st.st_mode):
            fd, _ = fs.open_node(at, directory=True)
            try:
                with os.scandir(fd) as entries:
                    tree = next(entries, None) is not None
            finally:
                os.close(fd)
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
            with fs.locate(source, follow=True) as at:
                return fs.read_regular(at)[0]
        except FileNotFoundError:
            raise ResourceError(
                self.id, f"source {source} does not exist; create it or fix source"
            ) from None
        except fs.PathRefused as exc:
            raise ResourceError(self.id, f"source: {exc.message}") from None

    def _owner_ids(self) -> tuple[int, int]:
        """The uid and gid asked for (-1: not asked), resolving names on first use."""
        p = self.params
        if self._uid is None:
            self._uid = -1 if p.owner is None else posix.lookup_uid(p.owner)
        if self._gid is None:
            self._gid = -1 if p.group is None else posix.lookup_gid(p.group)
        return self._uid, self._gid

    def _user(self, uid: int) -> str:
        """How to show ``uid``: as a name when the owner was given as a name."""
        owner = self.params.owner
        return str(uid) if owner is None or owner.isdigit() else posix.user_name(uid)

    def _group(self, gid: int) -> str:
        group = self.params.group
        return str(gid) if group is None or group.isdigit() else posix.group_name(gid)

    # -- apply ------------------------------------------------------------------------

    async def _write(self, ctx: Context, change: FileChange) -> None:
        """Write ``change.data`` to a private temp file and commit it over the path."""
        at = fs.locate(self._path, create=True)
        try:
            ctx.shared(atomic.Sweeper).sweep(at)
            fd, temp = atomic.create_temp(at, change.data, change.mode, change.uid, change.gid)
        except BaseException:
            at.close()
            raise
        await ctx.shared(atomic.Commits).commit(fd, temp, at, change.tree)

    def _set_meta(self, at: fs.At, change: FileChange) -> None:
        """Mode and owner through a descriptor of what is at the path now: a file (or a
        directory for state: directory); a symlink or anything else is refused."""
        fd, _ = fs.open_node(at, directory=self.params.state == "directory", change=True)
        try:
            fs.set_meta(fd, change.mode, change.uid, change.gid)
        finally:
            os.close(fd)

    def _remove(self) -> None:
        try:
            at = fs.locate(self._path)
        except (FileNotFoundError, NotADirectoryError):
            return
        with at:
            try:
                fs.remove(at, tree=self.params.force)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:  # filled since check
                    raise
                raise ResourceError(
                    self.id,
                    f"{self._path} is a directory that is not empty; set force: true to "
                    "remove it with everything in it",
                ) from exc

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str]:
        """The path it manages, as ``file:<path>``."""
        return (f"file:{self._path}",)

    def needs(self) -> tuple[Sequence[str], ...]:
        """Whatever else provides its own path (a package shipping it, a command creating
        it) comes first; then its nearest managed ancestor directory, not every ancestor;
        then the managed user and group that own it (``user:NAME``, ``gid:N``...)."""
        from convergent.resources.runas import needs

        owners = ((uid,) for uid in needs(self.params.owner, self.params.group))
        return ((f"file:{self._path}",), path_uids("file:", self._path), *owners)

    # -- reversal (meta: {reverse: true}) ------------------------------------------------
    # Before the first change the engine calls record_reverse, which keeps in the state
    # database either "created" (nothing was at the path) or what was there: a regular
    # file's content, mode, owner and group, or a directory's mode, owner and group. When
    # the resource leaves the graph, reverse() removes what it created or puts the
    # recorded content and metadata back (through descriptors: a symlink that has taken
    # the directory's place is refused, never followed), then forgets the record. A
    # symlink or special file it replaced is not recorded, and so not restored.

    def _record(self, ctx: Context) -> str | None:
        """The reversal record (the state database's own table, out of reach of ``kv``)."""
        return None if ctx.state is None else ctx.state.get_reversal(self.id)

    def _keep_record(self, ctx: Context, record: str | None) -> None:
        if ctx.state is not None:
            ctx.state.set_reversal(self.id, record)

    def record_reverse(self, ctx: Context, change: Change) -> None:
        """Keep how to undo the first change (later changes keep the first record)."""
        if ctx.state is None or ctx.state.readonly or self._record(ctx) is not None:
            return
        try:
            with fs.locate(self._path) as at:
                st = fs.lstat(at)
                if st is not None and stat.S_ISREG(st.st_mode):
                    data, st = fs.read_regular(at)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except fs.PathRefused as exc:
            raise self._error(exc) from None
        if st is None:
            self._keep_record(ctx, "created")
            return
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            return
        import json

        record: dict[str, object] = {
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
        if stat.S_ISREG(st.st_mode):
            import base64

            record["content"] = base64.b64encode(data).decode()
        self._keep_record(ctx, json.dumps(record))

    def plan_reverse(self, ctx: Context) -> str | None:
        """What :meth:`reverse` would do (read only), or None."""
        record = self._record(ctx)
        if record is None:
            return None
        if record != "created":
            return f"restore {self._path}"
        try:
            with fs.locate(self._path) as at:
                return f"remove {self._path}" if fs.lstat(at) is not None else None
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def reverse(self, ctx: Context) -> str | None:
        """Undo what this resource did (see above); None when there is nothing to undo."""
        record = self._record(ctx)
        if record is None:
            return None
        summary: str | None = None
        try:
            if record == "created":
                if self.plan_reverse(ctx) is not None:
                    self._remove()
                    summary = "removed"
            else:
                import json

                saved = json.loads(record)
                mode, uid, gid = saved["mode"], saved["uid"], saved["gid"]
                if "content" in saved:
                    import base64

                    data = base64.b64decode(saved["content"])
                    await self._write(
                        ctx, FileChange("restored", None, "write", data, mode, uid, gid)
                    )
                    summary = "restored content, mode and owner"
                else:
                    with fs.locate(self._path) as at:
                        fd, _ = fs.open_node(at, directory=True)
                        try:
                            fs.set_meta(fd, mode, uid, gid)
                        finally:
                            os.close(fd)
                    summary = "restored mode and owner"
        except fs.PathRefused as exc:
            raise self._error(exc) from None
        self._keep_record(ctx, None)
        return summary


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
