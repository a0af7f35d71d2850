"""FsWatcher against the real inotify in tmp_path: every change to a watched entry calls back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.host import fileid
from convergent.resources.fswatch import _HOLD_MAX, MERGED, NOISE_DRAINS, PACE, FsWatcher

TIMEOUT = 5.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


class Probe:
    """A callback that counts calls and lets a test wait for a call made while
    ``condition`` held (checked at call time, so a call that came before the change
    does not count)."""

    def __init__(self) -> None:
        self.calls = 0
        self.condition: Callable[[], bool] = lambda: True
        self._hit = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.condition():
            self._hit.set()

    async def called(self, condition: Callable[[], bool] = lambda: True) -> None:
        self.condition = condition
        self._hit.clear()
        await asyncio.wait_for(self._hit.wait(), TIMEOUT)


def inotify_watches(watcher: FsWatcher) -> int:
    """Watches the kernel holds for this descriptor, from /proc/self/fdinfo."""
    text = Path(f"/proc/self/fdinfo/{watcher.fileno()}").read_text()
    return sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))


def _write(path: Path, text: str = "x") -> None:
    path.write_text(text)


def _append(path: Path) -> None:
    with path.open("a") as f:
        f.write("more")


OPERATIONS: dict[str, tuple[Callable[[Path], object], Callable[[Path], object]]] = {
    # name: (set up before watching, the change that must call back)
    "create": (lambda p: None, _write),
    "delete": (_write, lambda p: p.unlink()),
    "modify": (_write, _append),
    "chmod": (_write, lambda p: p.chmod(0o600)),
    "chown": (_write, lambda p: os.chown(p, 65534, 65534)),
    "rename away": (_write, lambda p: p.rename(p.with_name("elsewhere"))),
    "rename onto": (
        lambda p: _write(p.with_name("other")),
        lambda p: p.with_name("other").rename(p),
    ),
    "mkdir": (lambda p: None, lambda p: p.mkdir()),
    "rmdir": (lambda p: p.mkdir(), lambda p: p.rmdir()),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_kind_of_change_calls_back(tmp_path: Path, operation: str) -> None:
    setup, change = OPERATIONS[operation]
    target = tmp_path / "target"
    setup(target)

    async def main() -> None:
        watcher = FsWatcher()
        probe = Probe()
        watcher.watch(str(target), probe)
        try:
            change(target)
            await probe.called()
        finally:
            watcher.close()

    run(main())


def test_events_reach_only_subscribers_of_that_name(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        a, b, sentinel = Probe(), Probe(), Probe()
        watcher.watch(str(tmp_path / "a"), a)
        watcher.watch(str(tmp_path / "b"), b)
        watcher.watch(str(tmp_path / "sentinel"), sentinel)
        try:
            _write(tmp_path / "b")
            _write(tmp_path / "sentinel")
            await sentinel.called()  # events arrive in order: b's were dispatched before
            assert b.calls >= 1
            assert a.calls == 0
        finally:
            watcher.close()

    run(main())


def test_ten_thousand_files_in_one_directory_use_one_watch(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        idle, target = Probe(), Probe()
        try:
            for i in range(10_000):
                watcher.watch(str(tmp_path / f"f{i}"), idle)
            watcher.watch(str(tmp_path / "f1234"), target)
            assert watcher.watch_count == 1
            assert inotify_watches(watcher) == 1
            _write(tmp_path / "f1234")
            await target.called()
        finally:
            watcher.close()

    run(main())


def test_file_under_missing_directories_is_noticed_once_they_exist(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "f"

    async def main() -> None:
        watcher = FsWatcher()
        probe = Probe()
        watcher.watch(str(target), probe)
        try:
            target.parent.mkdir(parents=True)
            await probe.called()  # re-armed deeper as the directories appeared
            _write(target, "hello")
            await probe.called(lambda: target.exists())
            _write(target, "changed")
            await probe.called(lambda: target.read_text() == "changed")
            # Only the directory that holds the file is watched in the end.
            assert watcher.watch_count == 1
        finally:
            watcher.close()

    run(main())


def test_deleted_and_recreated_parent_is_still_watched(tmp_path: Path) -> None:
    parent = tmp_path / "d"
    target = parent / "f"
    parent.mkdir()
    _write(target)

    async def main() -> None:
        watcher = FsWatcher()
        probe = Probe()
        watcher.watch(str(target), probe)
        try:
            shutil.rmtree(parent)
            await probe.called(lambda: not target.exists())
            parent.mkdir()
            _write(target, "back")
            await probe.called(lambda: target.exists())
            target.chmod(0o600)
            await probe.called(lambda: target.stat().st_mode & 0o777 == 0o600)
        finally:
            watcher.close()

    run(main())


def test_moved_parent_is_rewatched_at_its_path(tmp_path: Path) -> None:
    parent = tmp_path / "d"
    target = parent / "f"
    parent.mkdir()
    _write(target)

    async def main() -> None:
        watcher = FsWatcher()
        probe = Probe()
        watcher.watch(str(target), probe)
        try:
            parent.rename(tmp_path / "moved")
            await probe.called(lambda: not target.exists())
            parent.mkdir()
            _write(target, "new")
            await probe.called(lambda: target.exists())
        finally:
            watcher.close()

    run(main())


def test_unsubscribe_stops_callbacks(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        gone, sentinel = Probe(), Probe()
        unsubscribe = watcher.watch(str(tmp_path / "gone"), gone)
        stop_sentinel = watcher.watch(str(tmp_path / "sentinel"), sentinel)
        try:
            unsubscribe()
            unsubscribe()  # twice is harmless
            _write(tmp_path / "gone")
            _write(tmp_path / "sentinel")
            await sentinel.called()
            assert gone.calls == 0
            stop_sentinel()
            assert watcher.watch_count == 0
            assert inotify_watches(watcher) == 0
        finally:
            watcher.close()

    run(main())


def test_two_subscribers_of_one_path_are_independent(tmp_path: Path) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        first, second = Probe(), Probe()
        stop_first = watcher.watch(str(tmp_path / "f"), first)
        watcher.watch(str(tmp_path / "f"), second)
        try:
            stop_first()
            _write(tmp_path / "f")
            await second.called()
            assert first.calls == 0
        finally:
            watcher.close()

    run(main())


def test_queue_overflow_calls_every_callback(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 1_000_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to overflow the queue")
    noise = tmp_path / "noise"
    noise.mkdir()
    a, b = noise / "a", noise / "b"
    a.touch()
    b.touch()

    async def main() -> None:
        watcher = FsWatcher()
        noisy, last = Probe(), Probe()
        watcher.watch(str(a), noisy)
        watcher.watch(str(tmp_path / "last"), last)
        try:
            # Without yielding to the loop, overflow the queue with ATTRIB events
            # (alternating names, so the kernel cannot merge them); the event for
            # "last" is then dropped by the kernel.
            for i in range(limit // 2 + 100):
                os.chmod(a, 0o600 | (i & 1) << 2)
                os.chmod(b, 0o600 | (i & 1) << 2)
            _write(tmp_path / "last")
            await last.called()
        finally:
            watcher.close()

    run(main())


def test_relative_path_is_rejected() -> None:
    watcher = FsWatcher()
    with pytest.raises(ValueError, match="absolute"):
        watcher.watch("relative/path", lambda: None)


def test_watch_entries_calls_back_for_any_entry_and_stops_when_unsubscribed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        probe = Probe()
        stop = watcher.watch_entries(str(tmp_path), probe)
        try:
            new = tmp_path / "never-named-before"
            _write(new)
            await probe.called(new.exists)
            os.chmod(new, 0o600)
            await probe.called()
            stop()
            assert inotify_watches(watcher) == 0
        finally:
            watcher.close()

    run(main())


def test_what_a_subscription_does_after_it_is_done_once_however_often_it_is_called(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        watcher = FsWatcher()
        after: list[str] = []
        try:
            stop = watcher.watch(str(tmp_path / "a"), Probe()).then(_Discarded(after), "a")
            assert watcher.watch_count == 1
            stop()
            stop()
            assert after == ["a"]
            assert watcher.watch_count == 0
        finally:
            watcher.close()

    run(main())


class _Discarded:
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def discard(self, item: str) -> None:
        self.into.append(item)


def test_files_held_for_their_own_renames_are_all_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without file handles (overlayfs, a seccomp filter; made to fail here), expect()
    holds each renamed file until its event is read. Every descriptor is given back once
    the events are read; renames that never happen hold at most ``_HOLD_MAX``; close()
    gives back the rest."""
    monkeypatch.setattr(fileid, "_handle", lambda dir_fd, name, flags: None)

    def open_fds() -> int:
        """Descriptors of this process open on a file of the test (the held ones)."""
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile (the listing's own...)
                found += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{tmp_path}/")
        return found

    def temp(name: str) -> int:
        return os.open(tmp_path / name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644)

    async def main() -> None:
        watcher = FsWatcher()
        own, last = Probe(), Probe()
        for i in range(50):
            watcher.watch(str(tmp_path / f"f{i}"), own)
        watcher.watch(str(tmp_path / "last"), last)
        before = open_fds()
        try:
            for i in range(50):
                fd = temp(f"t{i}")
                assert watcher.expect(str(tmp_path), f"t{i}", own, fd)
                os.close(fd)
                os.rename(tmp_path / f"t{i}", tmp_path / f"f{i}")
            assert open_fds() == before + 50  # held until their events are read
            _write(tmp_path / "last")
            await last.called()
            assert own.calls == 0  # each its own rename, the name holding its file
            assert open_fds() == before
            for i in range(300):  # never renamed
                fd = temp(f"never{i}")
                watcher.expect(str(tmp_path), f"never{i}", own, fd)
                os.close(fd)
            assert before < open_fds() <= before + _HOLD_MAX
        finally:
            watcher.close()
        assert open_fds() == before

    run(main())


def test_a_callback_that_raises_costs_no_other_event_of_the_same_read(tmp_path: Path) -> None:
    """A callback raising even a BaseException (``CancelledError``, from a cancelled
    future's result) is reported; the events read with its own still reach their
    subscribers."""
    errors: list[BaseException] = []

    def cancelled() -> None:
        raise asyncio.CancelledError

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: errors.append(context["exception"])
        )
        watcher = FsWatcher()
        after = Probe()
        watcher.watch(str(tmp_path / "first"), cancelled)
        watcher.watch(str(tmp_path / "second"), after)
        try:
            _write(tmp_path / "first")  # both before the loop reads: one read, in order
            _write(tmp_path / "second")
            await after.called()
            assert len(errors) >= 1 and isinstance(errors[0], asyncio.CancelledError)
        finally:
            watcher.close()

    run(main())


class _Timed(FsWatcher):
    """An FsWatcher that notes each of its wake-ups that read events: when it began
    (loop time), how many reads it made, and the noise count and pause it left."""

    __slots__ = ("enough", "read_calls", "wakeups", "want")

    def __init__(self, want: int) -> None:
        super().__init__()
        self.wakeups: list[tuple[float, int, int, bool]] = []
        self.want = want
        self.enough = asyncio.Event()
        self.read_calls = 0  # os.read calls on this descriptor (see _counting_reads)

    @property
    def times(self) -> list[float]:
        return [wakeup[0] for wakeup in self.wakeups]

    def _on_readable(self) -> None:
        began, before, calls = asyncio.get_running_loop().time(), self.reads, self.read_calls
        super()._on_readable()
        if self.reads != before:
            reads = self.read_calls - calls
            self.wakeups.append((began, reads, self._noise, self._paused is not None))
            if len(self.wakeups) >= self.want:
                self.enough.set()


@contextlib.contextmanager
def _counting_reads(watcher: _Timed) -> Iterator[None]:
    """Count the reads of ``watcher``'s descriptor (``watcher.read_calls``)."""
    real = os.read

    def read(fd: int, size: int) -> bytes:
        if fd == watcher.fileno():
            watcher.read_calls += 1
        return real(fd, size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "read", read)
        yield


@contextlib.contextmanager
def _busy_stranger(path: Path) -> Iterator[None]:
    """Another process writing ``path`` without pause, one line per write."""
    writer = subprocess.Popen(["/bin/sh", "-c", f"while :; do echo x; done > '{path}'"])
    try:
        yield
    finally:
        writer.kill()
        writer.wait()


def test_a_strangers_busy_file_beside_a_watched_one_is_read_at_a_pace(tmp_path: Path) -> None:
    """A file nobody watches, written in a loop in a watched directory, made the agent
    read one event at a time as fast as it could (a whole core). After NOISE_DRAINS
    wake-ups that told no one the descriptor is read at most once per PACE, one read
    each (what came during the pause; not again at once for the writer's next line)."""
    want = NOISE_DRAINS + 20

    async def main() -> None:
        watcher = _Timed(want)
        probe = Probe()
        watcher.watch(str(tmp_path / "watched"), probe)
        try:
            with _counting_reads(watcher), _busy_stranger(tmp_path / "log"):
                await asyncio.wait_for(watcher.enough.wait(), 30)
            paced_reads = {reads for _, reads, _, _ in watcher.wakeups[NOISE_DRAINS:want]}
            assert paced_reads == {1}, watcher.wakeups
            paced = watcher.times[NOISE_DRAINS:want]
            gaps = [b - a for a, b in itertools.pairwise(paced)]
            assert min(gaps) >= PACE, gaps
            assert probe.calls == 0
        finally:
            watcher.close()

    run(main())


def test_an_event_for_a_watched_name_is_told_through_a_strangers_noise(tmp_path: Path) -> None:
    """While the descriptor is read at a pace, a change of a watched name is told, the
    wake-up that told it ends the pace (the next one is read at once, the count starts
    again), and the next change is told too."""

    async def main() -> None:
        watcher = _Timed(NOISE_DRAINS + 5)
        probe = Probe()
        target = tmp_path / "watched"
        watcher.watch(str(target), probe)
        try:
            with _busy_stranger(tmp_path / "log"):
                await asyncio.wait_for(watcher.enough.wait(), 30)  # paced by now
                assert watcher.wakeups[-1][3], "paced"
                seen = len(watcher.wakeups)
                _write(target)
                await probe.called()
                # the stranger's events are few: only the probe's could reset the count
                after = watcher.wakeups[seen:]
                assert any(noise == 0 and not paused for _, _, noise, paused in after), after
                target.unlink()
                await probe.called(lambda: not target.exists())
        finally:
            watcher.close()

    run(main())


def test_events_that_do_not_merge_end_the_pace(tmp_path: Path) -> None:
    """Pausing helps only while the kernel merges a stranger's events; a wake-up that
    reads more than MERGED bytes of them (a burst of other names, here 300 files made
    while the loop does not read) ends the pace: waiting would only make a backlog, and
    the next pause waits for twice as many wake-ups."""

    async def main() -> None:
        watcher = _Timed(NOISE_DRAINS + 5)
        watcher.watch(str(tmp_path / "watched"), Probe())
        try:
            with _busy_stranger(tmp_path / "log"):
                await asyncio.wait_for(watcher.enough.wait(), 30)
                assert watcher.wakeups[-1][3], "paced"
                seen = len(watcher.wakeups)
                for i in range(300):  # no await: all of it queued before the next read
                    (tmp_path / f"burst-{i:04d}").touch()
                assert MERGED < 300 * 32
                watcher.enough.clear()
                watcher.want = seen + 1
                await asyncio.wait_for(watcher.enough.wait(), 30)
                after = watcher.wakeups[seen:]
                assert any(noise == 0 and not paused for _, _, noise, paused in after), after
                assert watcher._needed == 2 * NOISE_DRAINS  # the next try comes later
        finally:
            watcher.close()

    run(main())


def test_a_watch_after_close_starts_afresh(tmp_path: Path) -> None:
    """close() then watch() in a directory watched before: the new subscriber is told
    (it was left without a descriptor)."""

    async def main() -> None:
        watcher = FsWatcher()
        watcher.watch(str(tmp_path / "a"), Probe())
        watcher.close()
        probe = Probe()
        watcher.watch(str(tmp_path / "a"), probe)
        try:
            _write(tmp_path / "a")
            await probe.called()
        finally:
            watcher.close()

    run(main())
