"""A hostile local user for tests: a forked child running as uid/gid 65534.

::

    def swap(stopped):                       # runs in the child, as nobody
        n = 0
        while not stopped() and n < 100_000:
            exchange(a, b)
            n += 1
        return n                             # anything json can carry

    with Hostile(swap) as user:
        ...                                  # the agent's side, in the test process
    assert user.result > 0

Leaving the block tells the child to stop (it also stops by itself after its bound and
is killed after ``TIMEOUT`` s), waits for it and keeps what it returned in ``result``;
an exception in the child fails the test with its traceback. Tests using it need root:
mark them with :data:`needs_root`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import stat
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["NOBODY", "TIMEOUT", "Hostile", "exchange", "lab", "needs_root", "run_as_nobody"]

NOBODY = 65534
TIMEOUT = 30.0
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as uid 65534")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = (
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def lab(tmp_path: Path) -> Path:
    """``tmp_path``, reachable by the unprivileged user: its ancestors below / become
    traversable (0711, not listable) and it becomes 0755."""
    for parent in reversed(tmp_path.parents[:-1]):
        mode = stat.S_IMODE(parent.stat().st_mode)
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)
    tmp_path.chmod(0o755)
    return tmp_path


def exchange(a: str, b: str) -> bool:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE); False if it failed."""
    return (
        _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0
    )


class Hostile:
    """Runs ``work(stopped)`` in a child as uid/gid 65534 until stopped or done."""

    def __init__(self, work: Callable[[Callable[[], bool]], Any]) -> None:
        self.result: Any = None
        stop_r, self._stop_w = os.pipe()
        self._out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(self._stop_w)
                os.close(self._out_r)
                signal.alarm(int(TIMEOUT) + 5)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)

                def stopped() -> bool:
                    return bool(select.select([stop_r], [], [], 0)[0])

                payload = {"ok": work(stopped)}
                code = 0
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with contextlib.suppress(BaseException):
                data = json.dumps(payload).encode()
                while data:
                    data = data[os.write(out_w, data) :]
            os._exit(code)
        self.pid = pid
        os.close(stop_r)
        os.close(out_w)

    def __enter__(self) -> Hostile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish(raise_error=kind is None)

    def finish(self, *, raise_error: bool = True) -> Any:
        """Tell the child to stop, wait (bounded) and return what it returned."""
        if self._stop_w >= 0:
            os.close(self._stop_w)
            self._stop_w = -1
        chunks: list[bytes] = []
        while select.select([self._out_r], [], [], TIMEOUT)[0]:
            chunk = os.read(self._out_r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            os.kill(self.pid, signal.SIGKILL)
        os.close(self._out_r)
        _, status = os.waitpid(self.pid, 0)
        gone = f'{{"error": "the hostile user gave no result (wait status {status})"}}'
        payload = json.loads(b"".join(chunks) or gone.encode())
        if "error" in payload and raise_error:
            raise AssertionError(f"the hostile user failed:\n{payload['error']}")
        self.result = payload.get("ok")
        return self.result


def run_as_nobody(work: Callable[[], Any]) -> Any:
    """Run ``work()`` once as uid/gid 65534 and return its result."""
    with Hostile(lambda stopped: work()) as user:
        pass
    return user.result
