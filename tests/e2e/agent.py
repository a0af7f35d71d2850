"""Running the real ``convergent`` command as a subprocess, every wait bounded."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["EXAMPLES", "TIMEOUT", "Agent", "convergent"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 30.0  # bound for a whole command; a healthy one takes well under a second


def convergent(
    *args: str, timeout: float = TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m convergent ARGS`` to completion (killed if it outlives ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class Agent:
    """A long-running ``convergent`` whose output lines are read as they are printed.

    Use as a context manager: the process is killed on exit if it is still running.
    """

    def __init__(self, *args: str, prefix: tuple[str, ...] = ()) -> None:
        """``convergent ARGS``; ``prefix`` runs it through another command first (e.g.
        ``("ip", "netns", "exec", NS)``)."""
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "convergent", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out, True)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err, False)),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: IO[str], into: list[str], is_stdout: bool) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if is_stdout:
                self._lines.put(line.rstrip("\n"))
        if is_stdout:
            self._lines.put(None)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The next stdout line for which ``predicate`` holds; fails after ``timeout`` s or EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"no expected line within {timeout} s\nstdout: {self.out}\nstderr: {self.err}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"convergent closed stdout first\nstdout: {self.out}\nstderr: {self.err}"
                )
            if predicate(line):
                return line

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """The exit code, once the process has exited and its output has been read."""
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=timeout)
        return code

    def __enter__(self) -> Agent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        for thread in self._threads:
            thread.join(timeout=TIMEOUT)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()
