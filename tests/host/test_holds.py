"""The files repairs replace are held across their renames and freed after them
(host/holds.py, host/commits.py, host/syncthread.py): bounded, never leaked, never
needed for a repair."""

from __future__ import annotations

import _thread
import asyncio
import os
from pathlib import Path

import pytest

from convergent.host import atomic, holds, syncthread
from convergent.host.atomic import Commits

TIMEOUT = 5.0


async def _write(run: Commits, path: Path, data: bytes) -> None:
    at = run.locate(str(path))
    fd, temp = atomic.create_temp(at, data, 0o644, -1, -1)
    await asyncio.wait_for(run.commit(fd, temp, at, tree=False), TIMEOUT)


def _replaced_files_open(where: Path) -> int:
    """This process's descriptors on files of ``where`` that no longer have a name."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        count += target.startswith(f"{where}/") and target.endswith(" (deleted)")
    return count


def test_the_files_held_while_the_sync_thread_is_busy_stay_bounded(tmp_path: Path) -> None:
    """While the sync thread is stuck (a slow sync of something else), one repair after
    another replaces a file: at most MAX_HELD old files are held open, every repair
    lands, and once the thread goes on and the run ends, none is left open."""
    files = [tmp_path / f"f{i}" for i in range(holds.MAX_HELD * 3)]
    for path in files:
        path.write_bytes(b"old\n")
    stuck = _thread.allocate_lock()
    stuck.acquire()
    seen: list[int] = []

    async def main() -> None:
        run = Commits()
        syncthread.sync_thread().later(stuck.acquire)  # the thread waits for the test
        try:
            for path in files:
                await _write(run, path, b"new\n")
                seen.append(_replaced_files_open(tmp_path))
        finally:
            stuck.release()
        run.close()

    asyncio.run(main())
    assert max(seen) == holds.MAX_HELD  # held up to the bound, never past it
    assert all(path.read_bytes() == b"new\n" for path in files)
    assert _replaced_files_open(tmp_path) == 0


def test_a_repair_needs_no_sync_thread_to_free_what_it_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread can be started (a process or thread limit; root is exempt from
    RLIMIT_NPROC, so the failure is made by replacing the thread's start): the repair
    still lands and reports success, and the old file is closed at once."""
    target = tmp_path / "f"
    target.write_bytes(b"old\n")

    def refuse() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(syncthread, "sync_thread", refuse)

    async def main() -> None:
        run = Commits()
        await _write(run, target, b"new\n")
        run.close()

    asyncio.run(main())
    assert target.read_bytes() == b"new\n"
    assert _replaced_files_open(tmp_path) == 0


def test_nothing_is_held_on_a_file_system_that_is_not_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On NFS a rename over a file still open keeps it as ``.nfsXXXX``: there nothing is
    held. (No NFS server runs here: the type read from mountinfo is replaced.)"""
    (tmp_path / "f").write_bytes(b"old\n")
    dir_fd = os.open(tmp_path, os.O_PATH)
    dev = os.stat(tmp_path).st_dev
    try:
        here = holds.Holds()
        fd = here.hold("f", dir_fd, dev)
        assert fd != -1  # this file system is local: held
        here.drop([fd])
        monkeypatch.setattr(holds, "_fs_type", lambda dev: "nfs4")
        assert holds.Holds().hold("f", dir_fd, dev) == -1
    finally:
        os.close(dir_fd)


def test_the_file_system_type_is_read_from_mountinfo(tmp_path: Path) -> None:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        types = {line.split()[2] for line in f}
    found = holds._fs_type(os.stat(tmp_path).st_dev)
    assert found in types
    assert holds._fs_type(os.makedev(4095, 1048575)) == ""
