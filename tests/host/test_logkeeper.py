"""The keeper of a ``process`` log (``host/logkeeper.py``): real keeper processes started
as the agent starts them, real pipes and files. Each test feeds a keeper, closes the
pipe and waits (pidfd, bounded) until the keeper has ended; nothing is timed."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.host import logkeeper
from tests.waits import until_exited, until_in, until_written

BOUND = 30.0
NAME = "app.log"


class Keeper:
    """A keeper started on ``NAME`` in ``directory``, the pipe's writing end held here."""

    def __init__(self, directory: Path, limit: int) -> None:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(directory / NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self.pipe, self.pid = logkeeper.start(dfd, fd, NAME, limit)
        finally:
            os.close(fd)
            os.close(dfd)

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.pipe, view) :]

    def end(self) -> None:
        """Close the pipe's last writer; wait until the keeper has ended; reap it."""
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1
        until_exited(self.pid, BOUND)
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def keepers(tmp_path: Path) -> Iterator[list[Keeper]]:
    made: list[Keeper] = []
    yield made
    for keeper in made:
        if keeper.pipe >= 0:
            os.close(keeper.pipe)
        until_exited(keeper.pid, BOUND)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(keeper.pid, 0)


def _keeper(keepers: list[Keeper], directory: Path, limit: int) -> Keeper:
    keeper = Keeper(directory, limit)
    keepers.append(keeper)
    return keeper


def _lines(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{n:06d} {'.' * (n % 50)}\n".encode() for n in range(count)]


def test_output_without_line_ends_is_cut_at_the_limit(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    keeper = _keeper(keepers, tmp_path, 1000)
    keeper.feed(b"x" * 2500)
    keeper.end()
    assert (tmp_path / f"{NAME}.1").read_bytes() == b"x" * 1000  # the second 1,000
    assert (tmp_path / NAME).read_bytes() == b"x" * 500
    assert stat.S_IMODE((tmp_path / NAME).stat().st_mode) == 0o600


def test_a_rotation_falls_at_a_line_end_and_keeps_every_line(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    """Lines of varied lengths, 1.6 times the limit in all: one rotation, no line cut in
    two, none lost, none written twice, in their order."""
    limit = 4096
    lines = _lines("a", 150)
    total = b"".join(lines)
    assert limit < len(total) < 2 * limit
    keeper = _keeper(keepers, tmp_path, limit)
    for line in lines:
        keeper.feed(line)
    keeper.end()
    old, new = (tmp_path / f"{NAME}.1").read_bytes(), (tmp_path / NAME).read_bytes()
    assert len(old) <= limit and old.endswith(b"\n")
    assert old + new == total


def test_a_log_already_full_is_rotated_before_the_first_write(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    """A restart finds last run's log at the limit: the new output begins a new file."""
    (tmp_path / NAME).write_bytes(b"old\n" * 250)
    keeper = _keeper(keepers, tmp_path, 1000)
    keeper.feed(b"new\n")
    keeper.end()
    assert (tmp_path / f"{NAME}.1").read_bytes() == b"old\n" * 250
    assert (tmp_path / NAME).read_bytes() == b"new\n"


def test_two_keepers_of_one_log_lose_no_line(tmp_path: Path, keepers: list[Keeper]) -> None:
    """A restarted process's child kept the old pipe: two keepers write one log at once,
    each of its own writer's lines; the one rotation between them (under the directory's
    lock, by the keeper whose file the name holds) loses none and cuts none."""
    limit = 64 * 1024
    first, second = _keeper(keepers, tmp_path, limit), _keeper(keepers, tmp_path, limit)
    streams = {b"a": _lines("a", 1200), b"b": _lines("b", 1200)}
    assert limit < sum(len(b"".join(lines)) for lines in streams.values()) < 2 * limit

    def feed(keeper: Keeper, lines: list[bytes]) -> None:
        for at in range(0, len(lines), 20):  # 20 lines a write, each under PIPE_BUF
            keeper.feed(b"".join(lines[at : at + 20]))

    threads = [
        threading.Thread(target=feed, args=(keeper, lines))
        for keeper, lines in zip((first, second), streams.values(), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
        assert not thread.is_alive(), "a feeder is still blocked on its pipe"
    first.end()
    second.end()
    old, new = (tmp_path / f"{NAME}.1").read_bytes(), (tmp_path / NAME).read_bytes()
    assert len(old) <= limit + logkeeper.CHUNK and len(new) <= limit
    written = (old + new).splitlines(keepends=True)
    for prefix, lines in streams.items():
        assert [line for line in written if line.startswith(prefix)] == lines
    assert len(written) == sum(len(lines) for lines in streams.values())


def test_a_keeper_finding_its_file_rotated_by_another_goes_on_in_the_new_one(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    """The first keeper fills the log and rotates it; the second, whose file (now
    ``NAME.1``) is full, opens the new log instead of rotating again (which would put the
    new, nearly empty file over the older part)."""
    log, old = tmp_path / NAME, tmp_path / f"{NAME}.1"
    first, second = _keeper(keepers, tmp_path, 1000), _keeper(keepers, tmp_path, 1000)
    line = b"f" * 99 + b"\n"
    first.feed(line * 10)  # exactly the limit: not rotated yet
    until_written(log, lambda: log.stat().st_size == 1000, BOUND, "the full log")
    first.feed(b"first's eleventh\n")
    until_in(tmp_path, lambda: old.exists() and log.exists(), BOUND, "the rotation")
    until_written(log, lambda: log.read_bytes() == b"first's eleventh\n", BOUND, "the new log")
    second.feed(b"second's line\n")
    first.end()
    second.end()
    assert old.read_bytes() == line * 10
    assert log.read_bytes() == b"first's eleventh\nsecond's line\n"


def test_a_rotation_that_cannot_make_the_new_file_keeps_the_older_part(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    """The new file is made before anything is renamed: a keeper that cannot make it (no
    inode left; here, no descriptor: its limit lowered below the lowest free number)
    empties the full log and leaves ``NAME.1`` as it was, rather than losing both
    parts."""
    log, old = tmp_path / NAME, tmp_path / f"{NAME}.1"
    keeper = _keeper(keepers, tmp_path, 1000)
    first = b"o" * 99 + b"\n"
    keeper.feed(first * 10 + b"new\n")  # one rotation that works
    until_in(tmp_path, lambda: old.exists() and log.exists(), BOUND, "the first rotation")
    until_written(log, lambda: log.read_bytes() == b"new\n", BOUND, "the new log's line")
    assert old.read_bytes() == first * 10
    held = {int(fd) for fd in os.listdir(f"/proc/{keeper.pid}/fd")}
    lowest_free = min(set(range(len(held) + 1)) - held)  # a new descriptor's number
    resource.prlimit(keeper.pid, resource.RLIMIT_NOFILE, (lowest_free, lowest_free))
    keeper.feed(b"n" * 2000)  # fills the log: the rotation's new file cannot be made
    keeper.end()
    assert old.read_bytes() == first * 10
    assert log.stat().st_size <= 1000
    assert not (tmp_path / f".{NAME}.new").exists()


def test_a_log_whose_directory_is_gone_stays_capped(tmp_path: Path, keepers: list[Keeper]) -> None:
    """The state directory removed under a running keeper (``destroy``, by hand): it
    cannot rotate, so it empties its file instead of letting it grow."""
    directory = tmp_path / "processes"
    directory.mkdir()
    keeper = _keeper(keepers, directory, 1000)
    held = os.open(directory / NAME, os.O_RDONLY)
    try:
        shutil.rmtree(directory)
        keeper.feed(b"y" * 10_000)
        keeper.end()
        assert os.fstat(held).st_size <= 1000
    finally:
        os.close(held)


def test_the_keeper_holds_only_its_descriptors_and_its_own_session(
    tmp_path: Path, keepers: list[Keeper]
) -> None:
    """What outlives the agent holds nothing of it: the pipe, the directory, the log and
    /dev/null (what the agent was given without close-on-exec is closed: the test runs
    with such a descriptor); no environment; a session of its own; its working directory
    is /."""
    inherited = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inherited, True)
    try:
        keeper = _keeper(keepers, tmp_path, 1000)
    finally:
        os.close(inherited)
    keeper.feed(b"ready\n")  # the keeper has started once this line is in its log
    log = tmp_path / NAME
    until_written(log, lambda: log.read_bytes() == b"ready\n", BOUND, "the keeper's first line")
    fds = Path(f"/proc/{keeper.pid}/fd")
    held = {int(fd): os.readlink(fds / fd) for fd in os.listdir(fds)}
    assert sorted(held) == [0, 1, 2, 3, 4], held
    assert re.fullmatch(r"pipe:\[\d+\]", held[0]) and held[1] == held[2] == os.devnull
    assert held[3] == str(tmp_path) and held[4] == str(log)
    assert Path(f"/proc/{keeper.pid}/environ").read_bytes() == b""
    assert os.getsid(keeper.pid) == keeper.pid
    assert os.readlink(f"/proc/{keeper.pid}/cwd") == "/"
    keeper.end()
