"""The apply path of new files: created in their final mode, committed in the batch's
directory, and not checked again because of their own rename (docs/performance.md)."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.host import atomic, fileid, fs
from convergent.resources.fswatch import FsWatcher
from convergent.state.events import read_events
from tests.waits import Inotify

TIMEOUT = 10.0


def run(policy: Path, state: Path, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``convergent run`` of ``policy`` as a user would, with the agent's ``umask``."""
    argv = ["run", str(policy), "--state-dir", str(state), "--converged-timeout", "0"]
    return subprocess.run(
        [sys.executable, "-m", "convergent", *argv],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        umask=-1 if umask is None else umask,
    )


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o000])
def test_new_files_get_exactly_their_mode_whatever_the_agents_umask(
    tmp_path: Path, umask: int
) -> None:
    """A new file is created in its final mode when the umask cannot change it, and
    chmodded after its content when it can (a umask clearing its bits, special bits)."""
    target = tmp_path / "t"
    target.mkdir()
    modes = {"a": "0644", "b": "0755", "c": "2755", "d": "0600", "e": "0666"}
    lines = ["resources:"]
    for name, mode in modes.items():
        lines += [f"  - file: {target / name}", f"    content: {name}", f'    mode: "{mode}"']
    lines += [f"  - file: {target / 'plain'}", "    content: plain"]
    policy = tmp_path / "p.yaml"
    policy.write_text("\n".join(lines) + "\n")
    done = run(policy, tmp_path / "state", umask)
    assert done.returncode == 0, done.stderr
    for name, mode in modes.items():
        assert stat.S_IMODE((target / name).stat().st_mode) == int(mode, 8), name
    assert stat.S_IMODE((target / "plain").stat().st_mode) == 0o666 & ~umask


def test_a_new_file_gets_exactly_its_mode_in_a_directory_with_a_default_acl(
    tmp_path: Path,
) -> None:
    """A default ACL (here: nothing for others) takes bits from what open() asks; the
    file still ends with its mode (the ACL's mask follows chmod, as chmod(1) does)."""
    target = tmp_path / "t"
    target.mkdir()
    entries = ((0x01, 7), (0x04, 5), (0x20, 0))  # user::rwx, group::r-x, other::---
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, 0xFFFFFFFF) for t, p in entries)
    try:
        os.setxattr(target, "system.posix_acl_default", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {exc}")
    policy = tmp_path / "p.yaml"
    policy.write_text(f'resources:\n  - file: {target / "f"}\n    content: x\n    mode: "0644"\n')
    done = run(policy, tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((target / "f").stat().st_mode) == 0o644


def test_a_created_file_is_not_checked_again_because_of_its_own_rename(tmp_path: Path) -> None:
    """The history of a run creating files holds one pass per file (the repair), not a
    second one caused by the agent's own rename seen as drift."""
    target = tmp_path / "t"
    target.mkdir()
    lines = ["resources:"]
    for i in range(40):
        lines += [f"  - file: {target / f'f{i}'}", f"    content: f{i}"]
    policy = tmp_path / "p.yaml"
    policy.write_text("\n".join(lines) + "\n")
    done = run(policy, tmp_path / "state")
    assert done.returncode == 0, done.stderr
    rows = read_events(str(tmp_path / "state"))
    outcomes = [(row[2], row[3], row[6]) for row in rows if row[2].startswith("file[")]
    assert len(outcomes) == 40, outcomes
    assert {outcome for _, outcome, _ in outcomes} == {"repaired"}


def test_a_foreign_change_right_after_the_agents_own_rename_is_still_seen(
    tmp_path: Path,
) -> None:
    """Only the agent's own rename (paired by its inotify cookie) is kept from the writer's
    own watch: another subscriber of the name is told about it, and a rename by anyone
    else right after it reaches the writer too. Here both reach it: when the agent reads
    its own event, the name already holds the other file (a spurious call, never a missed
    one)."""

    async def scenario() -> tuple[int, int]:
        watcher = FsWatcher()
        calls = {"writer": 0, "other": 0}
        seen_twice = asyncio.Event()

        def writer() -> None:
            calls["writer"] += 1

        def other() -> None:
            calls["other"] += 1
            if calls["other"] == 2:
                seen_twice.set()

        path = str(tmp_path / "f")
        stops = [watcher.watch(path, writer), watcher.watch(path, other)]
        try:
            with fs.locate(path) as at:
                fd, temp = atomic.create_temp(at, b"ours", 0o644, -1, -1)
                assert watcher.expect(at.dir, temp, writer, fd)
                os.close(fd)
                os.rename(temp, at.name, src_dir_fd=at.fd, dst_dir_fd=at.fd)
            foreign = tmp_path / ".f.someone-else.tmp"
            foreign.write_bytes(b"theirs")
            os.rename(foreign, path)  # at once, before the agent read its own events
            await asyncio.wait_for(seen_twice.wait(), TIMEOUT)
        finally:
            for stop in stops:
                stop()
            watcher.close()
        return calls["writer"], calls["other"]

    writer_calls, other_calls = asyncio.run(scenario())
    assert other_calls == 2
    assert writer_calls == 2  # the foreign rename, and its own: the name holds another file


@pytest.mark.parametrize("handles", [True, False], ids=["file-handles", "no-file-handles"])
@pytest.mark.parametrize("strangers", [1, 2], ids=["one", "two"])
def test_a_foreign_rename_merged_by_the_kernel_into_the_agents_own_is_still_seen(
    tmp_path: Path, strangers: int, handles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify merges an event into the one queued just before it when both have the same
    watch, mask and name, whatever their rename cookies: a file renamed over the agent's
    from a directory nobody watches, before the agent reads its events, arrives as the
    agent's own ``IN_MOVED_TO`` (its cookie kept). The writer is still told, because what
    is at the name then is not the file it renamed. With two strangers, the second file
    is made once the first has freed the agent's file: ext4 gives it the agent's inode
    number, and the writer is told all the same (the file handle tells them apart).
    Without file handles (overlayfs, or a seccomp filter refusing ``name_to_handle_at``,
    as ``no-file-handles`` makes the call fail here), the agent's file is held until its
    event is read, so no stranger gets its number. A second inotify descriptor on the
    directory shows that the kernel did merge the renames."""
    if not handles:
        monkeypatch.setattr(fileid, "_handle", lambda dir_fd, name, flags: None)
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()  # same file system, watched by no one
    path = str(watched / "f")
    witness = Inotify(watched, 0x40 | 0x80)  # IN_MOVED_FROM | IN_MOVED_TO
    numbers: list[int] = []  # the agent's file's inode number, then each stranger's

    async def scenario() -> int:
        watcher = FsWatcher()
        calls = 0
        told = asyncio.Event()

        def writer() -> None:
            nonlocal calls
            calls += 1
            told.set()

        stop = watcher.watch(path, writer)
        try:
            with fs.locate(path) as at:
                fd, temp = atomic.create_temp(at, b"ours", 0o644, -1, -1)
                assert watcher.expect(at.dir, temp, writer, fd)
                numbers.append(os.fstat(fd).st_ino)
                os.close(fd)
                os.rename(temp, at.name, src_dir_fd=at.fd, dst_dir_fd=at.fd)
            for n in range(strangers):  # before the loop reads the agent's events
                theirs = elsewhere / f"theirs{n}"
                theirs.write_bytes(b"theirs")
                numbers.append(theirs.stat().st_ino)
                os.rename(theirs, path)
            await asyncio.wait_for(told.wait(), TIMEOUT)
        finally:
            stop()
            watcher.close()
        return calls

    try:
        calls = asyncio.run(scenario())
        moved_to = [name for mask, name in witness.read() if mask & 0x80]  # IN_MOVED_TO
    finally:
        witness.close()
    assert moved_to == ["f"], f"not one merged event: {moved_to}; this test tests nothing"
    assert (watched / "f").read_bytes() == b"theirs"
    assert calls == 1
    if not handles:
        assert numbers[0] not in numbers[1:], f"the held file's number was reused: {numbers}"
    elif strangers == 2 and numbers[2] != numbers[0]:
        pytest.skip(f"this file system did not reuse inode {numbers[0]} at once (ext4 does)")


def test_a_directory_lent_for_one_batch_is_refused_after_its_flush(tmp_path: Path) -> None:
    """Commits.locate lends the batch's directory descriptor only until that batch is
    flushed: a commit after it is refused, never renamed through a stale descriptor."""

    async def scenario() -> None:
        commits = atomic.Commits()
        with fs.locate(str(tmp_path / "a")) as at:
            fd, temp = atomic.create_temp(at, b"a", 0o644, -1, -1)
            first = commits.commit(fd, temp, at.take(), False)

        async def second(pending: asyncio.Task[None]) -> None:
            # Runs after the first commit queued its file, before the flush it scheduled.
            lent = commits.locate(str(tmp_path / "b"))
            fd, temp = atomic.create_temp(lent, b"b", 0o644, -1, -1)
            await asyncio.wait_for(pending, TIMEOUT)  # the batch flushed
            with pytest.raises(RuntimeError, match="outlived its batch"):
                await commits.commit(fd, temp, lent, False)

        pending = asyncio.ensure_future(first)
        await asyncio.wait_for(second(pending), TIMEOUT)
        commits.close()

    asyncio.run(scenario())
    assert (tmp_path / "a").read_bytes() == b"a"
    assert not (tmp_path / "b").exists()
