"""Progress on a terminal: a long run draws ``[N/M] converging...`` with the slowest
running resources under its lines (a real pseudo-terminal); a pipe, ``--quiet`` or a
short run draw nothing."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

from tests.e2e.agent import TIMEOUT

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen_lines(text: str) -> list[str]:
    """The lines left on the screen: a carriage return starts a line over."""
    lines = []
    for raw in text.split("\n"):
        line = _ANSI.sub("", raw.rstrip("\r").rpartition("\r")[2])
        if line.strip():
            lines.append(line)
    return lines


class Terminal:
    """``convergent ARGS`` with stdout and stderr on a pseudo-terminal, read as it goes."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convergent", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        self.master = master
        self.data = b""
        self.closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError as exc:  # EIO: every writer is gone
                assert exc.errno == errno.EIO
                chunk = b""
            with self._changed:
                if not chunk:
                    self.closed = True
                    self._changed.notify_all()
                    return
                self.data += chunk
                self._changed.notify_all()

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.text) or self.closed, timeout):
                raise AssertionError(f"not seen within {timeout} s: {self.text!r}")
            assert predicate(self.text), f"the run ended first: {self.text!r}"

    def finish(self) -> int:
        code = self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=TIMEOUT)
        os.close(self.master)
        return code


def _policy(tmp_path: Path, fifo: Path) -> Path:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""
            resources:
              - file: {tmp_path}/a
                content: "a"
              - exec: slow
                cmd: [sh, -c, "read x < {fifo}"]
              - file: {tmp_path}/b
                content: "b"
                require: [exec[slow]]
            """
        ).lstrip("\n")
    )
    return policy


def test_a_long_run_on_a_terminal_shows_progress_and_the_slowest_running(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    args = ("run", str(_policy(tmp_path, fifo)), "--state-dir", str(tmp_path / "s"))
    term = Terminal(*args, "--converged-timeout", "0")
    try:
        term.wait_for(lambda text: "[1/3] converging... slowest running: exec[slow] " in text)
        assert f"file[{tmp_path}/a]: created" in term.text
        with fifo.open("w") as go:
            go.write("go\n")
    finally:
        code = term.finish()
    assert code == 0, term.text
    lines = _screen_lines(term.text)
    assert lines[-1].startswith("resources: 3, repaired: 3 (3 resources), failed: 0")
    assert f"file[{tmp_path}/b]: created" in lines


def test_no_progress_through_a_pipe_with_quiet_or_for_a_short_run(tmp_path: Path) -> None:
    runs = {}
    for name in ("quiet", "pipe", "loud"):
        (tmp_path / name).mkdir()
        os.mkfifo(tmp_path / name / "go")
        policy = _policy(tmp_path / name, tmp_path / name / "go")
        runs[name] = ("run", str(policy), "--state-dir", str(tmp_path / name / "s"))
    once = ("--converged-timeout", "0")
    quiet = Terminal(*runs["quiet"], *once, "--quiet")
    pipe = subprocess.Popen(
        [sys.executable, "-m", "convergent", *runs["pipe"], *once],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    loud = Terminal(*runs["loud"], *once)
    try:
        # Started last, the loud run draws its line only after the delay: by then the
        # quiet and the piped runs, blocked in exec[slow] too, would have drawn theirs.
        loud.wait_for(lambda text: "converging..." in text)
    finally:
        for name in runs:
            with (tmp_path / name / "go").open("w") as go:
                go.write("go\n")
        piped, _ = pipe.communicate(timeout=TIMEOUT)
        assert quiet.finish() == 0 and loud.finish() == 0 and pipe.returncode == 0
    assert "converging" not in quiet.text and "created" not in quiet.text
    assert "resources: 3, repaired: 3 (3 resources), failed: 0" in quiet.text
    assert "converging" not in piped and "created" in piped

    short = tmp_path / "short.yaml"
    short.write_text(f"resources:\n  - file: {tmp_path}/c\n    content: c\n")
    term = Terminal("run", str(short), "--state-dir", str(tmp_path / "s"), *once)
    assert term.finish() == 0, term.text
    assert "converging" not in term.text and "created" in term.text
