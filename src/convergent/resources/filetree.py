"""Directories as trees for ``file``: ``recurse`` (owner, group and mode below),
``source`` (a directory's tree copied) and ``purge`` (what the source lacks removed).

The walk holds a descriptor of each directory and reaches every entry by name through
it (``openat``/``fstatat``/``mkdirat``/``renameat``/``unlinkat``), opening with
``O_NOFOLLOW|O_NONBLOCK``: a symlink below the top is never followed (a user who swaps
one in for a directory being walked gets it skipped, not entered), a FIFO never blocks,
and modes and owners change only through a verified descriptor. A file with several
hard links in a directory of a non-root user that is not its owner is refused, as by
:func:`convergent.host.fs.open_node`. Files are written as the top one is: a private
temp file, fsynced and renamed. A source's symlinks are copied as symlinks (the same
target text); its FIFOs, sockets and devices are skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from convergent.host import atomic, fs, modes, trust
from convergent.resources.fswatch import FsWatcher

__all__ = [
    "LINES",
    "ManagedPaths",
    "Spec",
    "Tally",
    "TreeWatch",
    "apply",
    "plan",
    "summary",
]

LINES = 200  # entries listed in a tree change's diff at most
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class ManagedPaths:
    """Paths managed by resources of this run (one instance per run, through
    ``ctx.shared``): ``purge`` leaves them, and directories holding them, alone."""

    __slots__ = ("_paths", "_sorted")

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._sorted: list[str] | None = None

    def add(self, path: str) -> None:
        self._paths.add(path)
        self._sorted = None

    def discard(self, path: str) -> None:
        self._paths.discard(path)
        self._sorted = None

    def covers(self, path: str) -> bool:
        """Whether ``path`` or something below it is managed."""
        if path in self._paths:
            return True
        if self._sorted is None:
            self._sorted = sorted(self._paths)
        import bisect

        prefix = path + "/"
        i = bisect.bisect_left(self._sorted, prefix)
        return i < len(self._sorted) and self._sorted[i].startswith(prefix)


class TreeWatch:
    """Inotify subscriptions that follow what the last check found: the directories of a
    tree and of its source (any entry in them), or single paths (what a followed link
    or a hard link leads to). Past the inotify watch limit the rest is left unwatched
    (found at the next check)."""

    __slots__ = ("_stops",)

    def __init__(self) -> None:
        self._stops: dict[tuple[bool, str], Callable[[], None]] = {}

    def update(
        self,
        watcher: FsWatcher,
        event: Callable[[], None],
        tops: tuple[str, ...] | None = None,
        found: list[str] | tuple[str, ...] = (),
        paths: tuple[str, ...] | None = None,
    ) -> None:
        """Watch exactly the directories ``found`` (relative) below each of ``tops`` (when
        given), and exactly the entries ``paths`` (when given); the kind not given is
        left as it is."""
        wanted: set[tuple[bool, str]] = set()
        if tops is not None:
            wanted.update(
                (True, os.path.join(t, r).rstrip("/") or "/") for t in tops for r in found
            )
        if paths is not None:
            wanted.update((False, path) for path in paths)
        kinds = {kind for kind, given in ((True, tops), (False, paths)) if given is not None}
        for gone in [k for k in self._stops if k[0] in kinds and k not in wanted]:
            self._stops.pop(gone)()
        for key in sorted(wanted - self._stops.keys()):
            entries, path = key
            try:
                watch = watcher.watch_entries if entries else watcher.watch
                self._stops[key] = watch(path, event)
            except OSError:
                return

    def close(self) -> None:
        stops, self._stops = self._stops, {}
        for stop in stops.values():
            stop()


class Spec:
    """What a tree should be: ``path`` (the top), ``mode`` (applied below only with
    ``recurse``), ``source`` (a directory to copy), ``purge``, and ``uid``/``gid`` (-1:
    left alone)."""

    __slots__ = ("gid", "mode", "path", "purge", "recurse", "source", "uid")

    def __init__(
        self,
        path: str,
        mode: modes.Mode | None,
        source: str | None,
        *,
        recurse: bool,
        purge: bool,
        uid: int,
        gid: int,
    ) -> None:
        self.path = path
        self.mode = mode
        self.source = source
        self.recurse = recurse
        self.purge = purge
        self.uid = uid
        self.gid = gid


class Tally:
    """What a walk found (or did): counts, and one line per entry (the first LINES)."""

    __slots__ = ("created", "dirs", "lines", "removed", "updated")

    def __init__(self) -> None:
        self.created = self.updated = self.removed = 0
        self.lines: list[str] = []
        self.dirs: list[str] = []  # the directories walked, relative ("" the top)

    def note(self, what: str, entry: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        if len(self.lines) < LINES:
            self.lines.append(f"{what} {entry}")


def summary(tally: Tally) -> str:
    """``3 files updated, 1 removed`` (empty when nothing)."""
    every = ((tally.created, "created"), (tally.updated, "updated"), (tally.removed, "removed"))
    counts = [(n, w) for n, w in every if n]
    parts = [f"{n} {w}" for n, w in counts]
    if parts:
        n = counts[0][0]
        parts[0] = f"{n} {'file' if n == 1 else 'files'} {counts[0][1]}"
    return ", ".join(parts)


def plan(res: Spec, at: fs.At | None, managed: ManagedPaths | None) -> Tally:
    """What is different below the directory at ``at`` (None: it does not exist yet, so
    all of the source is to be created). Read only."""
    return _run(res, at, managed or ManagedPaths(), act=False)


def apply(res: Spec, at: fs.At, managed: ManagedPaths) -> Tally:
    """Make everything below the directory at ``at`` right; what was done."""
    return _run(res, at, managed, act=True)


def _run(res: Spec, at: fs.At | None, managed: ManagedPaths, *, act: bool) -> Tally:
    walk = _Walk(res, managed, act)
    top = fs.open_node(at, directory=True)[0] if at is not None else None
    try:
        source = res.source
        if source is None:
            if top is not None:
                walk.recurse(top, "")
            return walk.tally
        try:
            with fs.locate(source, follow=True) as src_at:
                src = fs.open_node(src_at, directory=True)[0]
        except FileNotFoundError:
            raise fs.PathRefused(
                errno.ENOENT, f"source {source} does not exist; create it or fix source"
            ) from None
        try:
            walk.copy(src, top, "")
        finally:
            os.close(src)
    finally:
        if top is not None:
            os.close(top)
    return walk.tally


def _open(dfd: int, name: str) -> tuple[int, os.stat_result] | None:
    """A regular file or directory in ``dfd``, never followed; None for anything else."""
    try:
        fd = os.open(name, _OPEN, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise
    st = os.fstat(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        os.close(fd)
        return None
    return fd, st


def _lstat(dfd: int | None, name: str) -> os.stat_result | None:
    if dfd is None:
        return None
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


class _Walk:
    __slots__ = ("act", "gid", "managed", "mode", "purge", "sweeper", "tally", "top", "uid")

    def __init__(self, res: Spec, managed: ManagedPaths, act: bool) -> None:
        self.mode = res.mode if res.recurse else None
        self.uid, self.gid = res.uid, res.gid
        self.purge = res.purge
        self.managed = managed
        self.act = act
        self.top = res.path.rstrip("/")
        self.tally = Tally()
        self.sweeper = atomic.Sweeper()  # temp files a killed agent left in the tree

    def want(self, old: int, directory: bool) -> int:
        mode = self.mode
        if mode is None:
            return old
        if mode.octal is not None and directory:
            return modes.with_search(mode.octal)
        return mode.apply(old, directory=directory)

    def meta(
        self, fd: int, st: os.stat_result, base: int | None, owner: int, entry: str,
        at: tuple[int, str], data: bytes | None = None,
    ) -> bool:  # fmt: skip
        """Set mode (from ``base``, the source's mode, or the entry's own) and owner on
        the opened entry (``at``: its directory's descriptor and its name; ``data``: the
        source's bytes it holds); whether anything differed. A regular file someone else
        may have written gets a new file of ``data`` instead when in place would give it
        rights (:func:`trust.new_inode_needed`), and is never made setuid or setgid from its
        own bytes."""
        old = stat.S_IMODE(st.st_mode)
        mode = self.want(old if base is None else base, stat.S_ISDIR(st.st_mode))
        uid = self.uid if self.uid not in (-1, st.st_uid) else -1
        gid = self.gid if self.gid not in (-1, st.st_gid) else -1
        if mode == old and uid == -1 and gid == -1:
            return False
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and owner not in (0, st.st_uid):
            raise fs.PathRefused(
                errno.EPERM,
                f"{self.top}/{entry} has {st.st_nlink} hard links, is owned by uid "
                f"{st.st_uid} and sits in a directory of uid {owner}: it may be another file "
                "linked in, so its mode and owner are left alone; remove the extra links",
            )
        if stat.S_ISREG(st.st_mode) and trust.untrusted(st) is not None:
            asked = None if self.mode is None and base is None else mode
            return self._renew(fd, st, asked, entry, at, data)
        if self.act:
            fs.set_meta(fd, mode, uid, gid)
        return True

    def _renew(
        self, fd: int, st: os.stat_result, mode: int | None, entry: str,
        at: tuple[int, str], data: bytes | None,
    ) -> bool:  # fmt: skip
        """Mode and owner for a file someone else may have written (``mode`` None: not
        asked, its own kept): a new file of the source's ``data`` when in place would give
        it rights; without ``data`` (``recurse``: bytes the tree does not own, a
        service's open log among them) in place, never setuid or setgid."""
        uid = self.uid if self.uid not in (-1, st.st_uid) else -1
        gid = self.gid if self.gid not in (-1, st.st_gid) else -1
        refused = trust.special_refused(st, mode, uid, gid, content=data is not None)
        if refused is not None:
            raise fs.PathRefused(
                errno.EPERM, f"{self.top}/{entry}: not made setuid or setgid: {refused}"
            )
        new_uid = st.st_uid if uid == -1 else uid
        new_gid = st.st_gid if gid == -1 else gid
        final = trust.kept_mode(st, new_uid, new_gid) if mode is None else mode
        if data is None or trust.new_inode_needed(st, mode, uid, gid) is None:
            if final == stat.S_IMODE(st.st_mode) and uid == -1 and gid == -1:
                return False
            if self.act:
                fs.set_meta(fd, final, uid, gid)
            return True
        if self.act:
            dfd, name = at
            self.write(dfd, name, entry, data, final, new_uid, new_gid, os.fstat(dfd).st_uid)
        return True

    def recurse(self, dfd: int, rel: str) -> None:
        """Owner, group and mode on every file and directory below ``dfd``."""
        self.tally.dirs.append(rel)
        owner = os.fstat(dfd).st_uid
        for name in sorted(os.listdir(dfd)):
            opened = _open(dfd, name)
            if opened is None:
                continue  # a symlink, a special file, or gone
            fd, st = opened
            try:
                if self.meta(fd, st, None, owner, rel + name, (dfd, name)):
                    self.tally.note("updated", rel + name)
                if stat.S_ISDIR(st.st_mode):
                    self.recurse(fd, f"{rel}{name}/")
            finally:
                os.close(fd)

    def copy(self, sfd: int, dfd: int | None, rel: str) -> None:
        """Make the tree below ``dfd`` (None: not made yet) a copy of the one below ``sfd``."""
        self.tally.dirs.append(rel)
        owner = os.fstat(dfd).st_uid if dfd is not None else 0
        names = sorted(os.listdir(sfd))
        for name in names:
            entry = rel + name
            sst = _lstat(sfd, name)
            if sst is None:
                continue
            dst = _lstat(dfd, name)
            if stat.S_ISDIR(sst.st_mode):
                self.copy_dir(sfd, dfd, name, entry, sst, dst, owner)
            elif stat.S_ISREG(sst.st_mode):
                self.copy_file(sfd, dfd, name, entry, sst, dst, owner)
            elif stat.S_ISLNK(sst.st_mode):
                link = os.readlink(name, dir_fd=sfd)
                same = dst is not None and stat.S_ISLNK(dst.st_mode)
                if same and os.readlink(name, dir_fd=dfd) == link:
                    continue
                self.tally.note("created" if dst is None else "updated", entry)
                if self.act and dfd is not None:
                    self.clear(dfd, name, dst)
                    os.symlink(link, name, dir_fd=dfd)
        if self.purge and dfd is not None:
            for name in sorted(set(os.listdir(dfd)) - set(names)):
                if self.managed.covers(f"{self.top}/{rel}{name}"):
                    continue
                self.tally.note("removed", rel + name)
                if self.act:
                    self.clear(dfd, name, _lstat(dfd, name))

    def copy_dir(
        self, sfd: int, dfd: int | None, name: str, entry: str,
        sst: os.stat_result, dst: os.stat_result | None, owner: int,
    ) -> None:  # fmt: skip
        opened_src = _open(sfd, name)
        if opened_src is None or not stat.S_ISDIR(opened_src[1].st_mode):
            if opened_src is not None:
                os.close(opened_src[0])
            return  # swapped since it was listed: the next check sees it
        child_src = opened_src[0]
        try:
            if dfd is not None and dst is not None and stat.S_ISDIR(dst.st_mode):
                opened = _open(dfd, name)
                if opened is None:
                    return
                fd, st = opened
                try:
                    if self.meta(fd, st, stat.S_IMODE(sst.st_mode), owner, entry, (dfd, name)):
                        self.tally.note("updated", entry)
                    self.copy(child_src, fd, entry + "/")
                finally:
                    os.close(fd)
                return
            self.tally.note("created" if dst is None else "updated", entry)
            if not self.act or dfd is None:
                self.copy(child_src, None, entry + "/")
                return
            self.clear(dfd, name, dst)
            os.mkdir(name, 0o700, dir_fd=dfd)
            made = _open(dfd, name)
            if made is None or not stat.S_ISDIR(made[1].st_mode):
                if made is not None:
                    os.close(made[0])
                raise fs.PathRefused(errno.EPERM, f"{self.top}/{entry} changed while made")
            fd = made[0]
            try:
                mode = self.want(stat.S_IMODE(sst.st_mode), True)
                fs.set_meta(fd, mode, self.uid, self.gid)
                self.copy(child_src, fd, entry + "/")
            finally:
                os.close(fd)
        finally:
            os.close(child_src)

    def copy_file(
        self, sfd: int, dfd: int | None, name: str, entry: str,
        sst: os.stat_result, dst: os.stat_result | None, owner: int,
    ) -> None:  # fmt: skip
        opened_src = _open(sfd, name)
        if opened_src is None:
            return
        try:
            data = fs.read_all(opened_src[0], opened_src[1].st_size)
        finally:
            os.close(opened_src[0])
        base = stat.S_IMODE(sst.st_mode)
        if dfd is not None and dst is not None and stat.S_ISREG(dst.st_mode):
            opened = _open(dfd, name)
            if opened is None:
                return
            fd, st = opened
            try:
                if fs.read_all(fd, st.st_size) == data:
                    if self.meta(fd, st, base, owner, entry, (dfd, name), data):
                        self.tally.note("updated", entry)
                    return
            finally:
                os.close(fd)
            refused = trust.special_refused(
                st, self.want(base, False), self.uid, self.gid, content=True
            )
            if refused is not None:
                raise fs.PathRefused(
                    errno.EPERM, f"{self.top}/{entry}: not made setuid or setgid: {refused}"
                )
            self.tally.note("updated", entry)
            if self.act:
                uid = st.st_uid if self.uid == -1 else self.uid
                gid = st.st_gid if self.gid == -1 else self.gid
                self.write(dfd, name, entry, data, self.want(base, False), uid, gid, owner)
            return
        self.tally.note("created" if dst is None else "updated", entry)
        if self.act and dfd is not None:
            self.clear(dfd, name, dst)
            self.write(dfd, name, entry, data, self.want(base, False), self.uid, self.gid, owner)

    def write(
        self, dfd: int, name: str, entry: str, data: bytes, mode: int, uid: int, gid: int,
        owner: int,
    ) -> None:  # fmt: skip
        """A private temp file, fsynced and renamed over ``name`` (never followed)."""
        ident = os.fstat(dfd)
        at = fs.At(
            dfd, name, f"{self.top}/{entry}".rpartition("/")[0], (ident.st_dev, ident.st_ino), owner
        )
        self.sweeper.sweep(at)
        atomic.replace(at, data, mode, uid, gid)

    @staticmethod
    def clear(dfd: int, name: str, st: os.stat_result | None) -> None:
        """Remove what is at ``name`` (a directory with everything in it)."""
        if st is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(st.st_mode):
                import shutil

                shutil.rmtree(name, dir_fd=dfd)
            else:
                os.unlink(name, dir_fd=dfd)
