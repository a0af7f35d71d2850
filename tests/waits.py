"""Bounded waits on events, for tests that wait outside an event loop.

- :func:`until_written`: until a predicate over a file holds, re-checked at each inotify
  event on that file (``IN_MODIFY``, ``IN_CLOSE_WRITE``, ``IN_ATTRIB``), never on a timer.
- :func:`until_in`: the same over a directory's entries (``IN_CREATE``, ``IN_MOVED_TO``,
  ``IN_CLOSE_WRITE``, ``IN_DELETE``, ``IN_MOVED_FROM``).
- :func:`open_fifo_writer`: open a FIFO for writing once some process opened it for
  reading (the kernel's blocking open is the event).
- :func:`until_group_gone`: until no process of a process group exists, woken by the
  members' pidfds (reaping them when this process is their parent or subreaper).
- :func:`until_exited`: until a process has ended (a zombie has), woken by its pidfd.
- :class:`Inotify`: the events of one directory (mask, name) as the kernel queued them,
  read now or waited for one at a time.

Every wait fails with an ``AssertionError`` naming what it waited for once its bound
passes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from convergent.host.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
)

__all__ = [
    "Inotify",
    "open_fifo_writer",
    "until_exited",
    "until_group_gone",
    "until_in",
    "until_written",
]


@contextlib.contextmanager
def _inotify(path: Path, mask: int) -> Iterator[int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        yield fd
    finally:
        os.close(fd)


def _drain(fd: int, deadline: float) -> bool:
    """Wait for events on ``fd`` until ``deadline``; False when none came."""
    if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        return False
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 65536):
            pass
    return True


class Inotify:
    """inotify on one directory, read in this process: its events as ``(mask, name)``,
    in the kernel's order. A context manager (the descriptor is closed on the way out)."""

    def __init__(self, directory: Path, mask: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._read: list[tuple[int, str]] = []  # read and not taken yet, oldest first

    def read(self) -> list[tuple[int, str]]:
        """Every event queued now and not taken yet (no wait)."""
        self._fill()
        events, self._read = self._read, []
        return events

    def wait(self, wanted: Callable[[int, str], bool], deadline: float) -> tuple[int, str] | None:
        """The next event for which ``wanted(mask, name)`` holds (those before it are
        taken too); None when none came by ``deadline`` (``time.monotonic()``)."""
        while True:
            while self._read:
                event = self._read.pop(0)
                if wanted(*event):
                    return event
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            self._fill()

    def _fill(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 65536):
                offset = 0
                while offset < len(data):
                    _, mask, _, size = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16 : offset + 16 + size].rstrip(b"\0")
                    self._read.append((mask, name.decode(errors="replace")))
                    offset += 16 + size

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def until_written(path: Path, holds: Callable[[], bool], bound: float, what: str) -> None:
    """Return once ``holds()``; checked now and after each write to ``path``."""
    deadline = time.monotonic() + bound
    with _inotify(path, IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB) as fd:
        while not holds():
            assert _drain(fd, deadline), f"{what}: not within {bound} s"


def until_in(directory: Path, holds: Callable[[], bool], bound: float, what: str) -> None:
    """Return once ``holds()``; checked now and after each change of an entry of
    ``directory`` (created, written, renamed in or out, removed)."""
    deadline = time.monotonic() + bound
    mask = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM
    with _inotify(directory, mask) as fd:
        while not holds():
            assert _drain(fd, deadline), f"{what}: not within {bound} s"


def open_fifo_writer(fifo: Path, bound: float) -> int:
    """Open ``fifo`` for writing once a reader has it open; the descriptor is
    non-blocking. The kernel wakes the open when the reader comes (a blocking open);
    after ``bound`` s this opens a reader itself to end the wait, and fails."""
    lapsed = threading.Event()
    readers: list[int] = []

    def give_up() -> None:
        lapsed.set()
        readers.append(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

    timer = threading.Timer(bound, give_up)
    timer.start()
    try:
        fd = os.open(fifo, os.O_WRONLY)
    finally:
        timer.cancel()
        timer.join()
        for reader in readers:
            os.close(reader)
    if lapsed.is_set():
        os.close(fd)
        raise AssertionError(f"nothing opened {fifo} for reading in {bound} s")
    os.set_blocking(fd, False)
    return fd


def _members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def keepers_of(log: Path) -> list[int]:
    """The PIDs of the running keepers of the ``process`` log ``log``
    (``convergent.host.logkeeper``, found by their command line and the directory they
    hold: every test's ``process[app]`` has a log of the same name)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = any(b"convergent.host.logkeeper" in arg for arg in argv)
        if not ours or os.fsencode(log.name) not in argv:
            continue
        try:
            held, parent = os.stat(f"/proc/{entry}/fd/3"), log.parent.stat()
        except OSError:
            continue
        if (held.st_dev, held.st_ino) == (parent.st_dev, parent.st_ino):
            found.append(int(entry))
    return sorted(found)


def until_exited(pid: int, bound: float) -> None:
    """Until process ``pid`` has ended (gone already: at once)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()  # not select(): the descriptor may be past 1,024
        poller.register(fd, select.POLLIN)
        assert poller.poll(bound * 1000), f"process {pid} is still running"
    finally:
        os.close(fd)


def until_group_gone(pgid: int, bound: float) -> None:
    """Return once no process of group ``pgid`` runs (a zombie has ended; ours are reaped)."""
    deadline = time.monotonic() + bound
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG) is not None:
                pass
        members = _members(pgid)
        if not members:
            return
        fds = []
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                fds.append(os.pidfd_open(pid))
        try:
            if fds:
                left = max(0.0, deadline - time.monotonic())
                assert select.select(fds, [], [], left)[0], f"process group {pgid} is alive"
        finally:
            for fd in fds:
                os.close(fd)
        assert time.monotonic() < deadline, f"process group {pgid} is still alive"
