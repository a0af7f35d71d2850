"""Kill a process with SIGKILL the moment a chosen inotify event happens in a directory.

The test arms a :class:`KillOn` before it starts the process, then hands it the pid: a
thread reads the inotify descriptor and sends SIGKILL from there as soon as the chosen
event (the nth one matching) arrives. No sleep decides when the kill lands; every wait
is bounded.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from tests.waits import Inotify

__all__ = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_MODIFY", "IN_MOVED_TO", "KillOn"]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100


class KillOn:
    """SIGKILL ``pid`` on the ``nth`` event in ``directory`` with a bit of ``mask`` set
    and a name for which ``name`` holds. ``fired`` is set once the kill was sent."""

    def __init__(
        self, directory: Path, mask: int, name: Callable[[str], bool], nth: int = 1
    ) -> None:
        self._inotify = Inotify(directory, mask)
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
        while not self._done.is_set() and time.monotonic() < deadline:
            # at most 0.2 s at a time: the test may end the watch meanwhile
            found = self._inotify.wait(self._matches, min(deadline, time.monotonic() + 0.2))
            if found is None:
                continue
            self.events.append(found[1])
            self._seen += 1
            if self._seen == self._nth:
                os.kill(pid, signal.SIGKILL)
                self.fired.set()
                return

    def _matches(self, mask: int, name: str) -> bool:
        return bool(mask & self._mask) and self._name(name)

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
        self._inotify.close()
