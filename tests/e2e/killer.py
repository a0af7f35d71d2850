"""Kill a process with SIGKILL the moment a chosen inotify event happens in a directory.

The test arms a :class:`KillOn` before it starts the process, then hands it the pid: a
thread reads the inotify descriptor and sends SIGKILL from there as soon as the chosen
event (the nth one matching) arrives. No sleep decides when the kill lands; every wait
is bounded.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_MODIFY", "IN_MOVED_TO", "KillOn"]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
_EVENT = struct.Struct("iIII")


class KillOn:
    """SIGKILL ``pid`` on the ``nth`` event in ``directory`` with a bit of ``mask`` set
    and a name for which ``name`` holds. ``fired`` is set once the kill was sent."""

    def __init__(
        self, directory: Path, mask: int, name: Callable[[str], bool], nth: int = 1
    ) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self._mask = mask
        self._name = name
        self._nth = nth
        self._seen = 0
        self.fired = threading.Event()
        self.events: list[str] = []  # names of every matching event, for failure messages
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def start(self, pid: int, timeout: float = 20.0) -> None:
        """Kill ``pid`` on the chosen event (watching for at most ``timeout`` s)."""
        self._thread = threading.Thread(target=self._run, args=(pid, timeout), daemon=True)
        self._thread.start()

    def _run(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self._fd], [], [], min(left, 0.2))
            if not ready:
                continue
            data = os.read(self._fd, 65536)
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = raw.rstrip(b"\0").decode(errors="replace")
                if mask & self._mask and self._name(name):
                    self.events.append(name)
                    self._seen += 1
                    if self._seen == self._nth:
                        os.kill(pid, signal.SIGKILL)
                        self.fired.set()
                        return

    def __enter__(self) -> KillOn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._fd)
