"""One inotify descriptor per engine run, shared by every resource that watches files.

Resources get it with ``ctx.shared(FsWatcher)`` and subscribe to a path::

    unsubscribe = ctx.shared(FsWatcher).watch("/etc/motd", ctx.event)

How it works:

- A path is watched through its *parent directory*: one inotify watch per directory,
  shared by every subscriber, and events are dispatched by child name with one dict
  lookup. 10,000 files in one directory cost one watch.
- When the parent does not exist yet, the nearest existing ancestor is watched for the
  next missing component; as directories appear the watch is re-armed deeper. When a
  watched directory is deleted or moved, the watch is re-armed up. After every re-arm
  the affected callbacks are called: a spurious event is fine, a missed one is a bug.
- ``watch_entries(directory, callback)`` calls back for any entry of a directory (the
  directories of a ``recurse`` or ``source`` tree), on the same per-directory watches.
- A queue overflow re-arms everything and calls every callback.
- No task of its own: the descriptor is registered with ``loop.add_reader`` and events
  are drained in the reader callback, at most ``_DRAIN_READS`` reads at a time (then the
  loop's other work runs, and the reader is called again).
- A watched directory reports every entry, watched or not: a stranger's file written
  without pause beside a watched one (a log, ``while :; do echo; done > f``) made the
  agent read one event at a time as fast as it could, a whole core. After
  :data:`NOISE_DRAINS` wake-ups in a row whose events concern no subscriber and were few
  (at most :data:`MERGED` bytes), the descriptor is read at most once per :data:`PACE`
  seconds (the kernel merges a file's repeated events meanwhile), until an event for a
  subscriber comes or a wake-up reads more than ``MERGED`` bytes (events that do not
  merge: opened and closed for each line, several files in turn; pausing would only
  make a backlog, so each pause that met one makes the next wait for twice as many
  wake-ups, up to ``_NOISE_MAX``). An event for a watched name in such a directory
  waits about ``PACE`` more at most (and what came before it is parsed first); none is
  lost. A ``watch_entries`` directory's events all concern its subscriber: never paced.

The descriptor is :class:`convergent.host.inotify.Inotify` (host/libc.py); its event
records are parsed here with ``struct``, 0.9 us an event. Applying 1,000 files makes
~6,000 events.

Limitation: only the parent directory is watched, so renaming a grandparent directory
(``mv /etc /etc.old`` while watching ``/etc/ssh/sshd_config``) goes unnoticed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from convergent.host import fileid
from convergent.host.inotify import (
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    IN_UNMOUNT,
    Inotify,
)

__all__ = ["FsWatcher", "Subscription"]

Callback = Callable[[], None]
# A subscriber's own rename (expect): who made it, the file it renamed (host/fileid.py)
# and, where that identity is only an inode number, an O_PATH descriptor holding the file
# (-1: none) so that its number is not given to another file before the event is read.
Own = tuple[Callback, bytes, int]

_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT
# Errors of inotify_add_watch that mean "this directory is not there (yet)": walk up.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_READ_SIZE = 65536
_EXPECT_MAX = 16384  # renames announced by expect() and not seen yet (the kernel's queue)
_MOVED = IN_MOVED_FROM | IN_MOVED_TO
# Descriptors held at most for expect(); the next drops every expected rename (told, then).
# Below Commits' batch of 256: the agent's descriptors stay under the usual 1,024.
_HOLD_MAX = 128


_ANY = ""  # the name key of a subscriber to every entry (no entry has an empty name)
_DRAIN_READS = 16  # reads of the descriptor per wake-up; then the loop's other work runs
# Wake-ups in a row whose events concern no subscriber (a stranger's busy file beside a
# watched one), each of at most MERGED bytes: from then on the descriptor is read at most
# once per PACE seconds, until an event for a subscriber comes or a wake-up reads more
# (events the kernel could not merge meanwhile: waiting only makes a backlog to parse).
NOISE_DRAINS = 16
PACE = 0.002
MERGED = 4096
_NOISE_MAX = 65536  # wake-ups before a pause, at most, after pauses that did not merge


def _each(callbacks: Callback | tuple[Callback, ...]) -> tuple[Callback, ...]:
    """The callbacks of one name in ``_Dir.names``, as a tuple."""
    return callbacks if type(callbacks) is tuple else (callbacks,)  # type: ignore[return-value]


def _still(own: Own, directory: str, name: str) -> Callback | None:
    """Who made the rename that put ``name`` in ``directory``, if the file there is still
    the one renamed (:meth:`FsWatcher.expect`); None: tell everyone. Read only, by path:
    a path that leads elsewhere finds another file, and costs one check too many."""
    callback, ident, _ = own
    return callback if fileid.of_path(f"{directory.rstrip('/')}/{name}") == ident else None


class _Dir:
    """A directory whose entries someone watches, and how it is watched right now.

    ``watch`` is the inotify watch it currently relies on: its own (``via`` is None) or
    the nearest existing ancestor's, waiting for the child named ``via`` to appear.
    """

    __slots__ = ("names", "path", "via", "watch")

    def __init__(self, path: str) -> None:
        self.path = path
        # name -> its callback, or a tuple of them when more than one (a tuple of one
        # cost 56 bytes a watched file)
        self.names: dict[str, Callback | tuple[Callback, ...]] = {}
        self.watch: _Watch | None = None
        self.via: str | None = None


class _Watch:
    """One inotify watch (one watch descriptor) and the directories that rely on it."""

    __slots__ = ("alive", "direct", "pending", "wd")

    def __init__(self, wd: int) -> None:
        self.wd = wd
        self.alive = True
        self.direct: tuple[_Dir, ...] = ()  # directories watched by this very watch
        self.pending: dict[str, tuple[_Dir, ...]] = {}  # child name -> deeper dirs waiting

    def link(self, d: _Dir, via: str | None) -> None:
        if via is None:
            self.direct += (d,)
        else:
            self.pending[via] = (*self.pending.get(via, ()), d)

    def unlink(self, d: _Dir, via: str | None) -> None:
        if via is None:
            self.direct = tuple(x for x in self.direct if x is not d)
            return
        rest = tuple(x for x in self.pending.get(via, ()) if x is not d)
        if rest:
            self.pending[via] = rest
        else:
            self.pending.pop(via, None)

    @property
    def unused(self) -> bool:
        return not self.direct and not self.pending


class _Discards(Protocol):
    def discard(self, item: str, /) -> None: ...


class Subscription:
    """The unsubscribe function :meth:`FsWatcher.watch` returns (once; then a no-op): a
    slotted object, ~90 bytes, where a closure and its five cells took ~350 per file.
    :meth:`then` adds one call after it (a file's ``ManagedPaths.discard(path)``)."""

    __slots__ = ("_after", "_arg", "_callback", "_dir", "_name", "_watcher")

    def __init__(self, watcher: FsWatcher, d: _Dir, name: str, callback: Callback) -> None:
        self._watcher: FsWatcher | None = watcher
        self._dir = d
        self._name = name
        self._callback = callback
        self._after: _Discards | None = None
        self._arg = ""

    def then(self, after: _Discards, arg: str) -> Subscription:
        """Call ``after.discard(arg)`` once unsubscribed, too (an object, not its bound
        method: 64 bytes fewer); returns this subscription."""
        self._after, self._arg = after, arg
        return self

    def __call__(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        after, self._after = self._after, None
        try:
            watcher._unsubscribe(self._dir, self._name, self._callback)
        finally:
            if after is not None:
                after.discard(self._arg)


class FsWatcher:
    """Calls back when the directory entry at a path may have changed.

    Create one per event loop (``ctx.shared(FsWatcher)``); :meth:`watch` must be called
    from that loop. :meth:`close` releases the descriptor and every watch.
    """

    __slots__ = (
        "_dirs",
        "_expected",
        "_held",
        "_inotify",
        "_loop",
        "_moved",
        "_needed",
        "_noise",
        "_paused",
        "_resumed",
        "_watches",
        "reads",
    )

    def __init__(self) -> None:
        self._inotify: Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirs: dict[str, _Dir] = {}  # directory path -> its subscribers
        self._watches: dict[int, _Watch] = {}  # watch descriptor -> live watch
        self._expected: dict[str, Own] = {}  # temp name -> who renames it (expect)
        self._moved: dict[int, Own] = {}  # rename cookie -> who renamed (expect)
        self._held = 0  # descriptors held by the entries of those two
        self._noise = 0  # wake-ups in a row that told no subscriber
        self._needed = NOISE_DRAINS  # ... before a pause (more after pauses that failed)
        self._resumed = False  # the wake-up to come is the first after a pause
        self._paused: asyncio.TimerHandle | None = None  # the read put off (PACE)
        self.reads = 0  # wake-ups that read events (tests count them)

    def expect(self, directory: str, temp: str, callback: Callback, fd: int) -> bool:
        """The subscriber ``callback`` is about to rename its own temp file ``temp``
        (open as ``fd``) over a name it watches in ``directory``: that rename (the
        ``IN_MOVED_TO`` paired by its cookie with ``temp``'s ``IN_MOVED_FROM``) is not
        told to ``callback``, which made it, as long as the name still holds that file
        (:mod:`convergent.host.fileid`) when the event is read. Every other subscriber, and
        every other event, is still told. Returns False (nothing expected) when
        ``directory`` is not watched itself, or the file cannot be identified (``fstat``
        failed). A rename that never happens leaves an entry that matches nothing (temp
        names are never reused), dropped with the others at :data:`_EXPECT_MAX` entries
        or :data:`_HOLD_MAX` descriptors held.

        Why the second condition: inotify merges an event into the one queued just before
        it when both have the same watch, mask and name, and keeps the first one's cookie.
        A file renamed over the name from a directory nobody watches, right after the
        subscriber's own rename and before its events are read, arrives as that one
        ``IN_MOVED_TO``; what is at the name then is not the temp file, and the
        subscriber is told. Not the inode number alone: once the stranger's file has freed
        the temp file's, ext4 gives that number to the next file made, and a second
        stranger's rename merges into the same event; the file handle's generation tells
        them apart. Where there is no file handle (overlayfs, a seccomp filter), an
        ``O_PATH`` descriptor holds the temp file until its event is read, so that no
        other file gets its number meanwhile."""
        d = self._dirs.get(directory)
        if d is None or d.via is not None or d.watch is None or not d.watch.alive:
            return False
        if len(self._expected) >= _EXPECT_MAX or self._held >= _HOLD_MAX:
            self._forget()  # renames whose events never came: spurious events for those
        try:
            ident = fileid.of_fd(fd)
            held = -1
            if not fileid.unique(ident):  # held until its event is read: not reused
                held = os.open(f"/proc/self/fd/{fd}", os.O_PATH | os.O_CLOEXEC)
                self._held += 1
        except OSError:  # not told what the file is: its rename is told to everyone
            return False
        self._expected[temp] = (callback, ident, held)
        return True

    def _forget(self, *entries: dict[Any, Own]) -> None:
        """Drop the expected renames (of ``entries``; default: all), closing what they
        hold: their events, if they come, are told to everyone."""
        for found in entries or (self._expected, self._moved):
            for own in found.values():
                self._let_go(own)
            found.clear()

    def _let_go(self, own: Own) -> None:
        if own[2] != -1:
            os.close(own[2])
            self._held -= 1

    # -- public -----------------------------------------------------------------------

    def watch(self, path: str, callback: Callback) -> Subscription:
        """Call ``callback`` whenever the entry at ``path`` may have been created, deleted,
        modified, chmod/chown'd or renamed to/from. Returns the unsubscribe function.

        ``path`` must be absolute. Raises OSError when the watch cannot be set up (for
        example when the inotify watch limit is reached).
        """
        if not path.startswith("/"):
            raise ValueError(f"FsWatcher.watch needs an absolute path, got {path!r}")
        path = os.path.normpath(path)
        head, _, name = path.rpartition("/")
        return self._subscribe(head or "/", name, callback)

    def watch_entries(self, directory: str, callback: Callback) -> Subscription:
        """Call ``callback`` whenever any entry of ``directory`` may have been created,
        deleted, modified, chmod/chown'd or renamed (a tree's directories: ``recurse``).
        Returns the unsubscribe function; raises as :meth:`watch` does."""
        if not directory.startswith("/"):
            raise ValueError(f"FsWatcher.watch_entries needs an absolute path, got {directory!r}")
        return self._subscribe(os.path.normpath(directory), _ANY, callback)

    def _subscribe(self, parent: str, name: str, callback: Callback) -> Subscription:
        d = self._dirs.get(parent)
        if d is None:
            self._start()
            d = _Dir(parent)
            self._attach(d, strict=True)
            self._dirs[parent] = d
        known = d.names.get(name)
        d.names[name] = callback if known is None else (*_each(known), callback)
        return Subscription(self, d, name, callback)

    def _unsubscribe(self, d: _Dir, name: str, callback: Callback) -> None:
        callbacks = list(_each(d.names.get(name, ())))
        if callback in callbacks:
            callbacks.remove(callback)
        if callbacks:
            d.names[name] = callbacks[0] if len(callbacks) == 1 else tuple(callbacks)
            return
        d.names.pop(name, None)
        if not d.names:
            self._detach(d)
            if self._dirs.get(d.path) is d:
                del self._dirs[d.path]

    def fileno(self) -> int:
        """The inotify descriptor (-1 before the first watch and after close)."""
        return -1 if self._inotify is None else self._inotify.fd

    @property
    def watch_count(self) -> int:
        """How many inotify watches are held right now."""
        return len(self._watches)

    def close(self) -> None:
        """Stop watching and close the descriptor; safe to call twice."""
        inotify, self._inotify = self._inotify, None
        if inotify is None:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(inotify.fd)
        inotify.close(self._watches)
        self._forget()
        for w in self._watches.values():
            w.alive = False
        self._watches.clear()
        for d in self._dirs.values():
            d.watch = d.via = None
        self._dirs.clear()  # a watch() after close() starts afresh, with a new descriptor

    # -- setting watches up -----------------------------------------------------------

    def _start(self) -> None:
        if self._inotify is not None:
            return
        loop = asyncio.get_running_loop()
        inotify = Inotify()
        loop.add_reader(inotify.fd, self._on_readable)
        self._inotify, self._loop = inotify, loop
        self._noise, self._needed, self._resumed = 0, NOISE_DRAINS, False

    def _arm(self, path: str, *, strict: bool) -> tuple[_Watch, str | None] | None:
        """Watch ``path`` or, while it is missing, its nearest existing ancestor.

        Returns the watch and the child name it waits for (None: ``path`` itself is
        watched). ``strict`` raises unexpected errors instead of walking past them.
        """
        inotify = self._inotify
        if inotify is None:
            return None
        via: str | None = None
        while True:
            try:
                wd = inotify.add_watch(path)
                break
            except OSError as exc:
                if path == "/" or (strict and exc.errno not in _ABSENT):
                    if strict:
                        raise
                    assert self._loop is not None
                    self._loop.call_exception_handler(
                        {"message": f"cannot watch {path}", "exception": exc}
                    )
                    return None
                head, _, via = path.rpartition("/")
                path = head or "/"
        w = self._watches.get(wd)
        if w is None:
            w = self._watches[wd] = _Watch(wd)
        return w, via

    def _attach(self, d: _Dir, *, strict: bool = False) -> None:
        """Point ``d`` at the right watch now, releasing the one it used before."""
        armed = self._arm(d.path, strict=strict)
        old, old_via = d.watch, d.via
        if armed is not None:
            w, via = armed
            if w is old and via == old_via:
                return
            w.link(d, via)
            d.watch, d.via = w, via
        else:
            d.watch = d.via = None
        if old is not None and old.alive:
            old.unlink(d, old_via)
            if old.unused:
                self._release(old)

    def _detach(self, d: _Dir) -> None:
        w, d.watch = d.watch, None
        if w is not None and w.alive:
            w.unlink(d, d.via)
            if w.unused:
                self._release(w)

    def _release(self, w: _Watch) -> None:
        w.alive = False
        if self._watches.get(w.wd) is w:
            del self._watches[w.wd]
        if self._inotify is not None:
            self._inotify.rm_watch(w.wd)

    def _rearm(self, d: _Dir) -> None:
        """Re-walk ``d`` after something changed on its way, then call its callbacks."""
        if self._dirs.get(d.path) is not d:
            return  # unsubscribed meanwhile
        self._attach(d)
        for callbacks in list(d.names.values()):
            for callback in _each(callbacks):
                self._call(callback)

    # -- events -----------------------------------------------------------------------

    def _on_readable(self) -> None:
        inotify = self._inotify
        if inotify is None:
            return
        fd, unpack = inotify.fd, inotify.unpack
        # os.fsdecode without its Python layers (~1.5 us a name; applying 1,000 files
        # makes ~6,000 events)
        encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        resumed, self._resumed = self._resumed, False
        told = False
        got = 0
        for _ in range(_DRAIN_READS):
            try:
                buf = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            offset, end = 0, len(buf)
            got += end
            while offset < end:
                wd, mask, cookie, size = unpack(buf, offset)
                offset += 16
                if size:
                    name = buf[offset : offset + size].rstrip(b"\0").decode(encoding, errors)
                    offset += size
                    own = None
                    if mask & _MOVED and (self._expected or self._moved):
                        own = self._renamed(mask, cookie, name)
                    try:
                        told = self._dispatch(wd, mask, name, own) or told
                    finally:
                        if own is not None:
                            self._let_go(own)
                else:
                    told = self._dispatch(wd, mask, None) or told
                if self._inotify is not inotify:
                    return  # closed by a callback
            if resumed and end <= MERGED:  # what came during the pause, and it was little:
                break  # the next lines of a busy file wait for the next wake-up
        if not got:
            return
        self.reads += 1
        if told:
            self._noise = 0
            return
        if got > MERGED:  # not merged by the kernel: waiting would only make a backlog
            self._noise = 0
            if resumed:  # a pause did not help: the next try comes after twice as many
                self._needed = min(2 * self._needed, _NOISE_MAX)
            return
        if resumed:  # a pause that merged the stranger's events: pause again at once
            self._needed = NOISE_DRAINS
        self._noise += 1
        if self._noise >= self._needed:  # only strangers' names: read again in PACE s
            assert self._loop is not None
            self._loop.remove_reader(fd)
            self._paused = self._loop.call_later(PACE, self._resume, inotify)

    def _resume(self, inotify: Inotify) -> None:
        self._paused = None
        self._resumed = True
        if self._inotify is inotify and self._loop is not None:
            self._loop.add_reader(inotify.fd, self._on_readable)

    def _renamed(self, mask: int, cookie: int, name: str) -> Own | None:
        """The subscriber that made this rename's arrival itself (:meth:`expect`), if any."""
        if mask & IN_MOVED_FROM:
            own = self._expected.pop(name, None)
            if own is not None:
                if len(self._moved) >= _EXPECT_MAX:
                    self._forget(self._moved)
                self._moved[cookie] = own
            return None
        return self._moved.pop(cookie, None)

    def _dispatch(self, wd: int, mask: int, name: str | None, own: Own | None = None) -> bool:
        """Tell the subscribers of the event; whether it concerned any (or a watch)."""
        w = self._watches.get(wd)
        if w is None:
            if mask & IN_Q_OVERFLOW:
                self._forget()
                for d in list(self._dirs.values()):
                    self._rearm(d)
                return True
            return False
        if name is None:  # the watched directory itself
            if mask & _GONE:
                self._lost(w, released_by_kernel=bool(mask & IN_IGNORED))
            return True
        told = False
        for d in w.direct:
            callbacks = d.names.get(name)
            maker = None if own is None or callbacks is None else _still(own, d.path, name)
            if callbacks is None:
                pass
            elif type(callbacks) is tuple:
                told = True
                for callback in callbacks:
                    if maker is None or callback != maker:  # (a bound method: equal, not same)
                        self._call(callback)
            else:
                told = True
                if maker is None or callbacks != maker:
                    self._call(callbacks)  # type: ignore[arg-type]
            for callback in _each(d.names.get(_ANY, ())):
                told = True
                self._call(callback)
        waiting = w.pending.get(name)
        if waiting is not None:
            for d in waiting:
                self._rearm(d)
            return True
        return told

    def _lost(self, w: _Watch, *, released_by_kernel: bool) -> None:
        """The watched directory was deleted, moved or unmounted: re-arm its users."""
        users = list(w.direct)
        for waiting in w.pending.values():
            users.extend(waiting)
        w.direct, w.pending = (), {}
        if released_by_kernel:
            w.alive = False
            self._watches.pop(w.wd, None)
        else:
            self._release(w)
        for d in users:
            d.watch = d.via = None
            self._rearm(d)

    def _call(self, callback: Callback) -> None:
        try:
            callback()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # CancelledError too: the read's other events go on
            assert self._loop is not None
            self._loop.call_exception_handler(
                {"message": f"FsWatcher callback {callback!r} failed", "exception": exc}
            )
