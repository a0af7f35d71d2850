"""Files written together are committed together, each with its own fsync, rename and outcome."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.host import atomic
from convergent.host.atomic import Commits as _Commits
from convergent.host.commits import SYNCFS_FROM
from convergent.resources.base import Context
from convergent.resources.file import File, FileChange

TIMEOUT = 5.0


def context(resource: File, commits: _Commits) -> Context:
    return Context(
        resource.id,
        ready=lambda: None,
        event=lambda: None,
        log=lambda message: None,
        shared=lambda factory: commits if factory is _Commits else factory(),
    )


class _Held(_Commits):
    """Commits that wait for the test: the flush a commit schedules only says it is waiting."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.waiting.set()


async def converge(resource: File, commits: _Commits) -> None:
    ctx = context(resource, commits)
    change = await resource.check(ctx)
    assert change is not None
    await resource.apply(ctx, change)


def test_files_written_together_each_get_their_own_outcome(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    good = File(str(tmp_path / "good"), content="fine\n")
    # A plan that does not clear the directory first: its rename fails.
    bad = File(str(tmp_path / "d"), content="x", force=True)

    async def main() -> list[BaseException | None]:
        commits = _Commits()
        return await asyncio.wait_for(
            asyncio.gather(
                converge(good, commits),
                bad.apply(context(bad, commits), FileChange("created", None, "write", b"x")),
                return_exceptions=True,
            ),
            TIMEOUT,
        )

    outcomes = asyncio.run(main())
    assert outcomes[0] is None
    assert isinstance(outcomes[1], IsADirectoryError)
    assert (tmp_path / "good").read_text() == "fine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "good"]  # no temp file left


def test_a_write_cancelled_before_its_commit_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old\n")
    resource = File(str(target), content="new\n")

    async def main() -> None:
        commits = _Held()
        task = asyncio.ensure_future(converge(resource, commits))
        await asyncio.wait_for(commits.waiting.wait(), TIMEOUT)  # temp written, not committed
        assert len(os.listdir(tmp_path)) == 2  # the file and its temp file
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
        commits.flush()  # the batch's flush comes after the cancel: it discards the file

    asyncio.run(main())
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_writes_still_waiting_when_the_run_ends_are_discarded(tmp_path: Path) -> None:
    target = tmp_path / "f"
    resource = File(str(target), content="new\n")

    async def main() -> None:
        commits = _Held()
        task = asyncio.ensure_future(converge(resource, commits))
        await asyncio.wait_for(commits.waiting.wait(), TIMEOUT)  # temp written, not committed
        assert len(os.listdir(tmp_path)) == 1  # only the temp file so far
        commits.close()  # what the engine does when the run ends
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []


def test_many_files_written_at_once_fit_in_a_small_descriptor_limit(tmp_path: Path) -> None:
    code = f"""
import asyncio, resource
from convergent.host.atomic import COMMIT_BATCH, Commits as _Commits
from convergent.resources.file import File
from tests.resources.test_file_commits import converge

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (COMMIT_BATCH + 32, hard))
files = [File({str(tmp_path)!r} + f"/f{{i}}", content=f"{{i}}\\n") for i in range(1000)]

async def main():
    commits = _Commits()
    await asyncio.gather(*(converge(f, commits) for f in files))

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"f{i}" for i in range(1000))
    assert (tmp_path / "f999").read_text() == "999\n"


async def _write(commits: _Commits, path: Path, data: bytes) -> None:
    at = commits.locate(str(path))
    fd, temp = atomic.create_temp(at, data, 0o644, -1, -1)
    await commits.commit(fd, temp, at, tree=False)


def test_a_name_written_in_two_batches_in_a_row_ends_with_the_later_bytes(tmp_path: Path) -> None:
    """The first batch is large (its sync goes to the sync thread); the second, one file
    written again at once while the first is still under way, is small: it must not be
    renamed before the first batch's renames, or the name would end with the older bytes."""
    names = [tmp_path / f"f{i}" for i in range(SYNCFS_FROM)]

    async def main() -> None:
        commits = _Commits()
        first = [asyncio.ensure_future(_write(commits, p, b"first\n")) for p in names]
        await asyncio.sleep(0)  # every temp file of the first batch written, flush scheduled
        await asyncio.sleep(0)  # the first batch flushed: its sync is under way
        second = asyncio.ensure_future(_write(commits, names[0], b"second\n"))
        await asyncio.wait_for(asyncio.gather(*first, second), TIMEOUT)

    asyncio.run(main())
    assert names[0].read_bytes() == b"second\n"
    assert all(p.read_bytes() == b"first\n" for p in names[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)


def test_the_end_of_a_run_finishes_the_batches_under_way(tmp_path: Path) -> None:
    """``close`` when a batch is syncing in the sync thread, and the event loop ends right
    after: the batch's files are renamed (not left as temp files), their directory synced."""
    names = [tmp_path / f"f{i}" for i in range(SYNCFS_FROM)]

    async def main() -> None:
        commits = _Commits()
        tasks = [asyncio.ensure_future(_write(commits, p, b"new\n")) for p in names]
        await asyncio.sleep(0)  # the temp files written, the flush scheduled
        await asyncio.sleep(0)  # flushed: the batch is in the sync thread
        commits.close()  # the run ends at once: nothing of the loop runs after this
        assert len(tasks) == len(names)

    asyncio.run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)
    assert all(p.read_bytes() == b"new\n" for p in names)


def _descriptors_of(st: os.stat_result) -> list[int]:
    """This process's descriptors open on the file ``st`` describes."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            other = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            found.append(int(name))
    return found


def test_a_file_a_repair_replaced_is_let_go_by_the_end_of_the_run(tmp_path: Path) -> None:
    """A repair holds the file it replaces across its rename and leaves its closing (where
    the kernel frees its blocks) to the sync thread: once the run ends, no descriptor of
    the old file is left, so its space is given back."""
    target = tmp_path / "f"
    target.write_bytes(b"old\n" * 4096)
    old = os.stat(target)

    async def main() -> None:
        commits = _Commits()
        await asyncio.wait_for(_write(commits, target, b"new\n"), TIMEOUT)
        commits.close()

    asyncio.run(main())
    assert target.read_bytes() == b"new\n"
    assert _descriptors_of(old) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
