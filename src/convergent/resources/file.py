"""``file``: a regular file, a directory (or a tree), a symlink, a hard link, or nothing.

::

    - file: /etc/motd
      content: "welcome\\n"
      mode: "u=rw,go=r"
      owner: root

- ``state: exists`` (the default) means a regular file. A symlink at the path is
  replaced when content or source is given, or with ``force`` (without either it is an
  error naming it: never destroy content not asked for); with ``follow: true`` content,
  mode and owner apply to what it leads to (CHASE_SAFE). A directory, fifo, socket or
  device is replaced only with ``force: true``; a FIFO is never opened.
- A missing parent directory is refused (as Puppet and Ansible do) unless
  ``parents: true``; then each directory created is named in the change.
- Every path goes through :mod:`convergent.host.fs` (CHASE_SAFE parents, the final name
  never followed, changes through a verified descriptor); trees through ``filetree``.
- Content is written atomically (:mod:`convergent.host.atomic`): a private temp file in
  the same directory, chowned before the first byte, written, chmodded, checked by
  ``validate``, synced (once per batch), renamed, its directory synced before the change
  is reported. Right content is never rewritten; ``backup`` keeps the old as ``PATH.~N~``.
- Without ``mode`` a new file gets 0666 & ~umask (a directory 0777 & ~umask); an existing
  file keeps its mode and owner. Check: open, fstat, read in the pass's dir; noop: filepredict.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Sequence
from typing import Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.host import atomic, fs, modes, posix, trust
from convergent.resources import fileparams, filetree
from convergent.resources.base import Change, Context, Resource
from convergent.resources.fileabilities import FileAbilities
from convergent.resources.filechange import DIFF_LIMIT, FileChange, absolute
from convergent.resources.fileparams import FileParams
from convergent.resources.fswatch import FsWatcher, Subscription

__all__ = ["DIFF_LIMIT", "File", "FileChange", "FileParams"]

_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID  # cleared by chown, so chmod comes after it
_LINKS = ("link", "hard")


class File(FileAbilities, Resource[FileParams], kind="file"):
    """See the module docstring; parameters are documented on :class:`FileParams`."""

    __slots__ = (
        "_check",
        "_data",
        "_gid",
        "_mode",
        "_path",
        "_source",
        "_target",
        "_trees",
        "_uid",
    )

    _path: str
    _data: bytes | None
    _source: str | None
    _target: str | None
    _mode: modes.Mode | None
    _uid: int | None
    _gid: int | None
    _check: tuple[str, ...] | None
    _trees: filetree.TreeWatch | None

    # -- parameters -------------------------------------------------------------------

    def validate(self) -> None:
        p = self.params
        if p.path is None and not self.name.startswith("/"):
            raise ParamError(
                "path",
                f"must be an absolute path, got the resource name {self.name!r}; "
                "name the resource by its absolute path or give path",
            )
        self._path = absolute("path", p.path if p.path is not None else self.name)
        if p.state != "directory" and self._path == "/":
            raise ParamError("path", f"/ cannot be managed with state: {p.state}")
        if p.content is not None and p.source is not None:
            raise ParamError("source", "content and source are exclusive: give one of them")
        fileparams.check_states(p)
        self._source = absolute("source", p.source) if p.source is not None else None
        if self._source == self._path:
            raise ParamError("source", f"source is the file itself ({self._path})")
        self._data = p.content.encode() if p.content is not None else None
        self._target = fileparams.parse_target(p, self._path) if p.state in _LINKS else None
        if p.purge and self._source is None:
            raise ParamError("purge", "needs source (a directory): purge removes what it lacks")
        self._check = self._trees = None
        if p.validate is not None:
            self._check = fileparams.parse_validate(p.validate)
            if self._data is None and self._source is None:
                raise ParamError("validate", "checks new content: give content or source")
        try:
            self._mode = modes.parse(p.mode) if p.mode is not None else None
        except ValueError as exc:
            raise ParamError("mode", str(exc)) from None
        self._uid = posix.parse_id("owner", p.owner) if p.owner is not None else -1
        self._gid = posix.parse_id("group", p.group) if p.group is not None else -1

    @property
    def path(self) -> str:
        """The absolute, normalised path managed."""
        return self._path

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the path (and ``source``) on the run's shared inotify descriptor, no task of
        its own (``Subscribes``); the path is registered as managed (``purge`` spares it)."""
        watcher = ctx.shared(FsWatcher)
        managed = ctx.shared(filetree.ManagedPaths)
        stops: list[Subscription] = [watcher.watch(self._path, ctx.event)]
        try:
            if self._source is not None:
                stops.append(watcher.watch(self._source, ctx.event))
        except BaseException:
            stops[0]()
            raise
        managed.add(self._path)
        p = self.params
        if p.recurse or p.follow or p.state == "hard" or (p.source and p.state == "directory"):
            self._trees = filetree.TreeWatch()  # kept in step by each check
        ctx.ready()
        if self._trees is None and self._source is None:  # one object, not ~330 B
            return stops[0].then(managed, self._path)
        return functools.partial(self._release, managed, stops)

    def _release(self, managed: filetree.ManagedPaths, stops: list[Subscription]) -> None:
        managed.discard(self._path)
        if self._trees is not None:
            self._trees.close()
            self._trees = None
        for stop in stops:
            stop()

    async def check(self, ctx: Context) -> FileChange | None:
        if self.params.purge:
            # Every worker of a run is started in one pass of the loop and subscribes in
            # its first step: after one yield, every file of the run is in ManagedPaths.
            import asyncio

            await asyncio.sleep(0)
        try:
            return self.plan(ctx)
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self.error(exc) from None

    def check_now(self, ctx: Context) -> bool | FileChange:  # ChecksNow; errors: check's
        try:
            return not self.params.purge and (self.plan(ctx) or True)
        except Exception:
            return False

    async def apply(self, ctx: Context, change: Change) -> str | None:
        try:
            if not isinstance(change, FileChange):
                planned = self.plan(ctx)
                if planned is None:
                    return None
                change = planned
            action = change.action
            if action == "refuse":
                raise ResourceError(self.id, fileparams.missing_text(self._path, change.parents[0]))
            create = bool(change.parents)
            if action == "write":
                return await self.write(ctx, change)
            if action == "remove":
                self.remove_path()
                return None
            with fs.locate(self._path, create=create, follow=self.params.follow) as at:
                if action == "meta":
                    self._set_meta(at, change)
                elif action == "mkdir":
                    fs.make_directory(at, change.mode, change.uid, change.gid, clear=change.clear)
                elif action in ("link", "hard"):
                    self._link(at, change)
                else:
                    return self._apply_tree(ctx, at, change)
        except (fs.PathRefused, posix.NoSuchName) as exc:
            raise self.error(exc) from None
        return None

    def error(self, exc: fs.PathRefused | posix.NoSuchName) -> ResourceError:
        """A path refusal or an unknown owner/group as this resource's error."""
        if isinstance(exc, posix.NoSuchName):
            field = "owner" if exc.what == "user" else "group"
            return ResourceError(self.id, f"{field}: {exc.message}")
        return ResourceError(self.id, exc.message)

    # -- check ------------------------------------------------------------------------

    def plan(self, ctx: Context | None = None) -> FileChange | None:
        """Compare the file system with the parameters (read only); None when right."""
        p = self.params
        state = p.state
        reads = state == "exists" and (self._data is not None or self._source is not None)
        found = fs.read_checked(self._path) if reads and not p.follow else None  # in the pass
        if found is not None:  # read in its directory, as locate finds it; None: not there
            st = found[1]
            return self._plan_missing(None) if st is None else self._plan_file(st, found[0])
        try:
            at = fs.locate(self._path, follow=p.follow, check=True)
        except FileNotFoundError as exc:  # a parent is missing
            return None if state == "absent" else self._plan_missing(str(exc.filename))
        except NotADirectoryError as exc:
            if state == "absent":
                return None
            raise ResourceError(
                self.id,
                f"cannot manage {self._path}: {exc.filename} is not a directory; remove it "
                "or manage it with state: directory",
            ) from None
        if ctx is not None and self._trees is not None and (p.follow or state == "hard"):
            paths = (at.path,) if p.follow else (self._target or at.path,)
            self._trees.update(ctx.shared(FsWatcher), ctx.event, paths=paths)
        try:
            # one open: a regular file is read at once
            old, st = fs.read_if_regular(at) if reads else (None, fs.lstat(at))
            if st is None:
                return None if state == "absent" else self._plan_missing(None)
            if state == "exists":
                return self._plan_file(st, old)
            if state == "directory":
                return self._plan_directory(at, st, ctx)
            if state in _LINKS:
                return self._plan_link(at, st)
            return self._plan_absent(at, st)
        finally:
            at.close()

    def _plan_missing(self, missing: str | None) -> FileChange:
        uid, gid = self.owner_ids()
        state = self.params.state
        if state == "directory":
            mode = self._new_mode(directory=True)
            if self.params.recurse or self._source is not None:
                change = FileChange("directory created", None, "tree", b"", mode, uid, gid)
                below = filetree.summary(filetree.plan(self._spec(), None, None))
                change.summary += f"; {below}" if below else ""
            else:
                change = FileChange("directory created", None, "mkdir", b"", mode, uid, gid)
        elif state in ("link", "hard"):
            change = self._link_change("created")
        else:
            data = self._wanted()
            change = FileChange("created", None, "write", data, self._new_mode(), uid, gid)
            change.validate = True
            if data:
                change.diff_later(self._path, b"", data, created=True)
        if missing is not None:
            change.parents = fileparams.missing_dirs(missing, self._path)
            if not self.params.parents:
                change.summary += (
                    f", once {missing} exists (missing: manage it with state: directory, "
                    "or set parents: true)"
                )
                change.action = "refuse"
            else:
                change.summary += f" (and directories {', '.join(change.parents)})"
        return change

    def _plan_file(self, st: os.stat_result, old: bytes | None) -> FileChange | None:
        path = self._path
        p = self.params
        kind = stat.S_IFMT(st.st_mode)
        wanted = self._data if self._data is not None else self._wanted() if self._source else None
        if kind != stat.S_IFREG:
            what = fs.kind_name(st.st_mode)
            if kind == stat.S_IFLNK and wanted is None and not p.force:
                raise ResourceError(
                    self.id,
                    f"{path} is a symlink; a file without content or source never replaces "
                    "it (nor follows it): set follow: true to manage what it points to, "
                    "give content or source, or set force: true to replace it",
                )
            if kind not in (stat.S_IFLNK, stat.S_IFREG) and not p.force:
                raise ResourceError(
                    self.id,
                    f"{path} is a {what}; set force: true to replace it"
                    f"{' (and everything in it)' if kind == stat.S_IFDIR else ''} with a file",
                )
            uid, gid = self.owner_ids()
            data = b"" if wanted is None else wanted
            tree = kind == stat.S_IFDIR
            change = FileChange(
                f"replaced {what} with file", None, "write", data, self._new_mode(), uid, gid,
                tree, tree,
            )  # fmt: skip
            change.validate = True
            return change.diff_later(path, b"", data, created=True) if data else change
        parts: list[str] = []
        rewrite = wanted is not None and old != wanted and p.replace
        if rewrite:
            parts.append("content changed")
        mode, uid, gid = self._meta(st, parts)
        if not parts:
            return None
        summary = ", ".join(parts)
        ours = self._owns_content()  # a new file of its content may replace it
        refused = trust.special_refused(st, mode, uid, gid, content=ours)
        if refused is not None:
            fix = "give owner (and content or source: a new file then replaces it)"
            raise ResourceError(self.id, trust.not_special(path, refused, fix))
        why = trust.new_inode_needed(st, mode, uid, gid) if ours and not rewrite else None
        if why is not None:  # in place, her descriptors would keep writing it
            summary += f" (a new file: {why})"
            rewrite = True
        if rewrite and wanted is not None:
            # A new inode replaces the file: carry over whatever is not being changed.
            new_uid = st.st_uid if uid == -1 else uid
            new_gid = st.st_gid if gid == -1 else gid
            change = FileChange(
                summary,
                None,
                "write",
                wanted,
                trust.kept_mode(st, new_uid, new_gid) if mode is None else mode,
                new_uid,
                new_gid,
            ).diff_later(path, old or b"", wanted, created=False)
            change.replaces = change.validate = True
            return change
        return FileChange(summary, None, "meta", b"", mode, uid, gid)

    def _owns_content(self) -> bool:
        """Whether a new file of its own bytes (content or source; not with ``replace:
        false``) may replace the file; else it is changed in place (an open log stays)."""
        return (self._data is not None or self._source is not None) and self.params.replace

    def _plan_directory(
        self, at: fs.At, st: os.stat_result, ctx: Context | None
    ) -> FileChange | None:
        kind = stat.S_IFMT(st.st_mode)
        tree = self.params.recurse or self._source is not None
        if kind != stat.S_IFDIR:
            what = fs.kind_name(st.st_mode)
            if not self.params.force:
                raise ResourceError(
                    self.id,
                    f"{self._path} is a {what}; set force: true to replace it with a directory",
                )
            uid, gid = self.owner_ids()
            summary = f"replaced {what} with directory"
            action: Literal["tree", "mkdir"] = "tree" if tree else "mkdir"
            mode = self._new_mode(directory=True)
            return FileChange(summary, None, action, b"", mode, uid, gid, clear=True)
        parts: list[str] = []
        mode, uid, gid = self._meta(st, parts, directory=True)
        if tree:
            managed = ctx.shared(filetree.ManagedPaths) if ctx is not None else None
            found = filetree.plan(self._spec(), at, managed)
            if ctx is not None and self._trees is not None:
                tops = (self._path,) if self._source is None else (self._path, self._source)
                self._trees.update(ctx.shared(FsWatcher), ctx.event, tops, found.dirs)
            below = filetree.summary(found)
            if below:
                parts.append(below)
                change = FileChange(", ".join(parts), None, "tree", b"", mode, uid, gid)
                change.diff = "\n".join(found.lines) + "\n" if found.lines else None
                return change
        return FileChange(", ".join(parts), None, "meta", b"", mode, uid, gid) if parts else None

    def _plan_link(self, at: fs.At, st: os.stat_result) -> FileChange | None:
        kind = stat.S_IFMT(st.st_mode)
        if self.params.state == "link" and kind == stat.S_IFLNK:
            now = os.readlink(at.name, dir_fd=at.fd)
            if now == self._target:
                parts: list[str] = []
                _, uid, gid = self._meta(st, parts, link=True)
                summary = ", ".join(parts)
                return FileChange(summary, None, "link", b"", None, uid, gid) if parts else None
            return self._link_change(f"link target {now} -> {self._target}", clear=True)
        if self.params.state == "hard" and self._target is not None:
            from convergent.resources.fileops import hard_target

            target = hard_target(self.id, self._target)
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return None
        what = fs.kind_name(st.st_mode)
        if kind != stat.S_IFLNK and not self.params.force:
            raise ResourceError(
                self.id, f"{self._path} is a {what}; set force: true to replace it with a link"
            )
        return self._link_change(
            f"replaced {what} with link", clear=True, tree=kind == stat.S_IFDIR
        )

    def _link_change(self, summary: str, *, clear: bool = False, tree: bool = False) -> FileChange:
        state = self.params.state
        assert self._target is not None
        if state == "hard":
            from convergent.resources.fileops import same_file_system

            same_file_system(self.id, self._path, self._target)
        uid, gid = self.owner_ids() if state == "link" else (-1, -1)
        return FileChange(
            summary, None, "hard" if state == "hard" else "link", os.fsencode(self._target),
            None, uid, gid, clear, tree,
        )  # fmt: skip

    def _new_mode(self, *, directory: bool = False) -> int | None:
        """The mode of something new: the mode applied to the default one (None: default)."""
        if self._mode is None:
            return None
        mode = self._mode.apply(fs.default_mode(directory), directory=directory)
        tree = directory and self.params.recurse and self._mode.octal is not None
        return modes.with_search(mode) if tree else mode

    def _meta(
        self, st: os.stat_result, parts: list[str], *, directory: bool = False, link: bool = False
    ) -> tuple[int | None, int, int]:
        """The mode, uid and gid to set on what ``st`` describes (None / -1: leave it),
        each difference described in ``parts``."""
        old_mode = stat.S_IMODE(st.st_mode)
        mode = None
        if self._mode is not None and not link:
            mode = self._mode.octal  # an octal mode (the usual one) is taken as it is
            if mode is None:
                mode = self._mode.apply(old_mode, directory=directory)
            if directory and self.params.recurse and self._mode.octal is not None:
                mode = modes.with_search(mode)  # the top of a tree as the directories below
            if mode != old_mode:
                parts.append(f"mode {old_mode:04o} -> {mode:04o}")
            else:
                mode = None
        uid, gid = self._uid, self._gid  # -1: not asked; None: a name not looked up yet
        uid, gid = self.owner_ids() if uid is None or gid is None else (uid, gid)
        if uid != -1 and uid != st.st_uid:
            parts.append(f"owner {self._user(st.st_uid)} -> {self._user(uid)}")
        else:
            uid = -1
        if gid != -1 and gid != st.st_gid:
            parts.append(f"group {self._group(st.st_gid)} -> {self._group(gid)}")
        else:
            gid = -1
        # chown clears setuid/setgid: put them back, unless another user may have set them
        # (and written the file) for the new owner (a directory's are not cleared)
        chown = uid != -1 or gid != -1
        if mode is None and chown and old_mode & _SPECIAL_BITS and not link:
            mode = old_mode if directory or not trust.untrusted(st) else old_mode & ~_SPECIAL_BITS
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
        if self._source is None:
            return b""
        from convergent.resources.fileops import read_source

        return read_source(self.id, self._source)

    def owner_ids(self) -> tuple[int, int]:
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

    def _spec(self) -> filetree.Spec:
        uid, gid = self.owner_ids()
        p = self.params
        return filetree.Spec(
            self._path, self._mode, self._source, recurse=p.recurse, purge=p.purge, uid=uid, gid=gid
        )

    # -- apply ------------------------------------------------------------------------

    async def write(self, ctx: Context, change: FileChange) -> str | None:
        """Write ``change.data`` to a temp file (validated, backed up), committed over the path."""
        check = self._check if change.validate else None
        backup = self.params.backup and change.replaces
        find = fs.locate if check is not None or backup else ctx.shared(atomic.Commits).locate
        at = find(self._path, create=bool(change.parents), follow=self.params.follow)
        try:
            ctx.shared(atomic.Sweeper).sweep(at)
            fd, temp = atomic.create_temp(at, change.data, change.mode, change.uid, change.gid)
        except BaseException:
            at.close()
            raise
        summary = None
        if find is fs.locate:
            from convergent.resources import fileops

            summary = await fileops.before_commit(self.id, check, backup, at, fd, temp, change)
        ctx.shared(FsWatcher).expect(at.dir, temp, ctx.event, fd)  # own rename: no recheck
        await ctx.shared(atomic.Commits).commit(fd, temp, at, change.tree)
        return summary

    def _set_meta(self, at: fs.At, change: FileChange) -> None:
        """Mode and owner through a descriptor of what is at the path now: a file (or a
        directory for state: directory); a symlink (of state: link: lchown) or anything
        else is refused."""
        if self.params.state == "link":
            os.chown(at.name, change.uid, change.gid, dir_fd=at.fd, follow_symlinks=False)
            return
        fd, st = fs.open_node(at, directory=self.params.state == "directory", change=True)
        try:
            ours = self._owns_content()
            why = trust.new_inode_needed(st, change.mode, change.uid, change.gid) if ours else None
            refused = trust.special_refused(st, change.mode, change.uid, change.gid, content=ours)
            if why is not None or refused is not None:
                raise ResourceError(
                    self.id,
                    f"{self._path} was replaced or made writable since its check "
                    f"({why or refused}); nothing was changed: its next check sees it",
                )
            fs.set_meta(fd, change.mode, change.uid, change.gid)
        finally:
            os.close(fd)

    def _link(self, at: fs.At, change: FileChange) -> None:
        if change.action == "link" and not change.clear and fs.lstat(at) is not None:
            self._set_meta(at, change)  # the link is right: only its owner
            return
        assert self._target is not None
        from convergent.resources import fileops

        fileops.put_link(at, self._target, hard=change.action == "hard", tree=change.tree)
        if change.uid != -1 or change.gid != -1:
            os.chown(at.name, change.uid, change.gid, dir_fd=at.fd, follow_symlinks=False)

    def _apply_tree(self, ctx: Context, at: fs.At, change: FileChange) -> str | None:
        st = fs.lstat(at)
        if st is None or change.clear:
            fs.make_directory(at, change.mode, change.uid, change.gid, clear=change.clear)
        elif change.mode is not None or change.uid != -1 or change.gid != -1:
            self._set_meta(at, change)
        filetree.apply(self._spec(), at, ctx.shared(filetree.ManagedPaths))
        return None

    def remove_path(self) -> None:
        """Remove what is at the path (a non-empty directory only with ``force``)."""
        from convergent.resources import fileops

        fileops.remove_path(self.id, self._path, force=self.params.force)

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str]:
        """The path it manages, as ``file:<path>``."""
        return (f"file:{self._path}",)

    def needs(self) -> tuple[Sequence[str], ...]:
        """Whatever else provides its own path (a package shipping it, a command creating
        it) comes first; then its nearest managed ancestor directory, not every ancestor;
        a hard link's target comes before the link; then the managed user and group that
        own it (``user:NAME``, ``gid:N``...)."""
        own: tuple[str, ...] = (f"file:{self._path}",)
        if self.params.state == "hard" and self._target is not None:
            own += (f"file:{self._target}",)
        if self.params.owner is None and self.params.group is None:
            return (own, path_uids("file:", self._path))  # runas is not imported for this
        from convergent.resources.runas import needs

        owners = ((uid,) for uid in needs(self.params.owner, self.params.group))
        return (own, path_uids("file:", self._path), *owners)
