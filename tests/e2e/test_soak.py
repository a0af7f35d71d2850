"""A storm of edits on 10,000 watched files: the real agent repairs every one, and its
memory stays flat from one storm to the next.

The agent (``python -m convergent run``) watches 10,000 ``file`` resources in 100
directories. An editor makes ~1,000 edits a second for 10 s, spread over the files:
content overwritten in place, file deleted, mode changed, file replaced by a rename.
Once the editor stops, every file must get its content and mode back, and the agent's
resident memory after a second storm must be what it was after the first.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.agent import Agent

__all__: list[str] = []

WATCHING = "converged; watching for changes (Ctrl-C to stop)"
DIRS = 100
FILES_PER_DIR = 100
MODE = 0o640
RATE = 1_000  # edits a second
STORM = 10.0  # seconds of editing
LATE = 5.0  # an editor that falls this far behind its schedule stops early
REPAIR_BOUND = 45.0  # seconds from the editor's last edit to every file right again
START_BOUND = 30.0  # seconds to the first convergence (10,000 checks, no change)
# Resident memory growth allowed over the first storm (warm-up included) and over the
# second (what a leak adds). Measured on 2 busy cores, 8 runs, 2 with both cores and the
# disk loaded: the idle agent holds ~90 MiB; the first storm adds 1.5-6.4 MiB (allocator
# arenas and buffers reach the high-water mark of the backlog: the more the agent lags,
# the more), each later storm 0-3.3 MiB (14 storms). A storm makes ~10,000 edits, which
# the agent hears as ~24,000 watch notifications; an object of ~450 bytes kept per
# notification (or ~1 KiB per edit: a report, a diff, a task) adds over 10 MiB a storm.
# Since the first pass starts its tasks a batch at a time (engine/pool.py) it no longer
# grows the heap to a task per file: the idle agent holds ~48 MiB, and the first storm
# pays the backlog's high-water mark instead (up to one loop task per file, ~2 KiB:
# +22 MiB, to ~70 MiB, where the agent used to idle at ~81-90 MiB and end at ~92).
WARM_BOUND = 32 * 1024 * 1024
GROWTH_BOUND = 10 * 1024 * 1024


def _content(index: int) -> str:
    return f"file {index}\n"


@dataclass
class Tree:
    """The 10,000 managed files (``DIRS`` directories of ``FILES_PER_DIR``)."""

    root: Path
    scratch: Path  # same file system, outside the watched directories
    paths: list[Path] = field(default_factory=list)
    last: dict[int, tuple[str, float]] = field(default_factory=dict)  # last edit, Unix time

    def create(self) -> None:
        """Every file in its right state, so the agent's first pass only checks."""
        self.scratch.mkdir()
        for d in range(DIRS):
            directory = self.root / f"d{d:02d}"
            directory.mkdir(parents=True)
            for f in range(FILES_PER_DIR):
                path = directory / f"f{f:02d}"
                path.write_text(_content(len(self.paths)), encoding="utf-8")
                path.chmod(MODE)
                self.paths.append(path)

    def policy(self) -> str:
        lines = ["resources:"]
        for index, path in enumerate(self.paths):
            lines.append(f"  - file: {path}")
            lines.append(f'    content: "file {index}\\n"')
            lines.append(f'    mode: "{MODE:04o}"')
        return "\n".join(lines) + "\n"

    def right(self, index: int) -> bool:
        """File ``index`` is a regular file with the policy's mode and content."""
        try:
            with open(self.paths[index], "rb") as f:
                if os.fstat(f.fileno()).st_mode != stat.S_IFREG | MODE:
                    return False
                return f.read() == _content(index).encode()
        except OSError:
            return False

    def wrong(self, indexes: set[int]) -> set[int]:
        """The files among ``indexes`` whose type, mode or content is not the policy's."""
        return {index for index in indexes if not self.right(index)}


@dataclass
class Storm:
    """What one storm did: edits made (by kind) and how long editing and repair took."""

    made: dict[str, int]
    editing: float
    repair: float = 0.0

    @property
    def edits(self) -> int:
        return sum(self.made.values())


def _edit(tree: Tree, rng: random.Random, serial: int, kinds: dict[str, int]) -> None:
    """One edit of a random file; a kind that finds the file gone does nothing."""
    index = rng.randrange(len(tree.paths))
    path = tree.paths[index]
    kind = ("overwrite", "delete", "chmod", "rename")[serial % 4]
    began = time.time()
    try:
        if kind == "overwrite":  # in place: open with O_TRUNC, write, close
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"edited {serial}\n")
        elif kind == "delete":
            path.unlink()
        elif kind == "chmod":
            path.chmod(0o604)
        else:  # a new file renamed over the managed one, as editors save
            temp = tree.scratch / f"t{serial}"
            temp.write_text(f"replaced {serial}\n", encoding="utf-8")
            os.rename(temp, path)
    except FileNotFoundError:
        return  # deleted and not repaired yet
    tree.last[index] = (kind, began)
    kinds[kind] += 1


def _storm(tree: Tree, seed: int) -> Storm:
    """Edit at ``RATE`` a second for ``STORM`` s on a monotonic schedule (load, not sync).

    Bounded in count (``RATE * STORM`` edits) and in time (stops ``LATE`` s behind).
    """
    rng = random.Random(seed)
    kinds = dict.fromkeys(("overwrite", "delete", "chmod", "rename"), 0)
    start = time.monotonic()
    for serial in range(int(RATE * STORM)):
        delay = start + serial / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif -delay > LATE:
            break
        _edit(tree, rng, serial, kinds)
    return Storm(kinds, time.monotonic() - start)


def _settled(line: str) -> bool:
    """The agent's line after a burst of activity: converged, or settled with failures."""
    return line == "converged" or line.startswith("settled with ")


def _wait_repaired(agent: Agent, tree: Tree, state: Path) -> float:
    """Seconds until every file is right again; each re-read follows a convergence line.

    No edit happens meanwhile, so a file found right stays right: only the files still
    wrong are read again. A "converged" line printed during the storm only causes one more
    read; the agent prints another after each later repair, so a file left wrong with no
    line to come is a missed event and fails the bound.
    """
    start = time.monotonic()
    deadline = start + REPAIR_BOUND
    pending = tree.wrong(set(range(len(tree.paths))))
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            agent.wait_for_line(_settled, timeout=remaining)
        except AssertionError:
            break  # the bound is reported below, with what is still wrong
        pending = tree.wrong(pending)
    assert not pending, (
        f"{len(pending)} file(s) not repaired within {REPAIR_BOUND} s of the last edit:\n"
        + "\n".join(_why(agent, tree, index, state) for index in sorted(pending)[:3])
        + f"\nstderr: {agent.err[-20:]}"
    )
    return time.monotonic() - start


def _why(agent: Agent, tree: Tree, index: int, state: Path) -> str:
    """What a file left wrong is, what the agent printed about it and the last passes the
    agent recorded for it (its event history): a missed event and a check that found a
    wrong file right look different here."""
    path = tree.paths[index]
    try:
        st = path.lstat()
        found = f"mode {st.st_mode:o}, ino {st.st_ino}, {path.read_bytes()[:40]!r}"
    except OSError as exc:
        found = f"{type(exc).__name__}"
    printed = [line for line in agent.out if str(path) in line][-4:]
    rows: list[tuple[object, ...]] = []
    try:
        db = sqlite3.connect(f"file:{state}/events.db?mode=ro", uri=True)
        with contextlib.closing(db):
            rows = db.execute(
                "SELECT time, outcome, cause, summary FROM events WHERE resource = ? "
                "ORDER BY id DESC LIMIT 4",
                (f"file[{path}]",),
            ).fetchall()
    except sqlite3.Error as exc:
        rows = [("events.db not read", str(exc))]
    edit = tree.last.get(index)
    return (
        f"{path}: {found}; last edit {edit}; printed {printed}; last passes (newest first) {rows}"
    )


def _rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_storm_of_edits_on_10k_watched_files_ends_repaired_with_flat_memory(
    tmp_path: Path,
) -> None:
    tree = Tree(tmp_path / "tree", tmp_path / "scratch")
    try:
        tree.create()
        policy = tmp_path / "policy.yaml"
        policy.write_text(tree.policy(), encoding="utf-8")
        args = ("run", str(policy), "--state-dir", str(tmp_path / "state"))
        with Agent(*args) as agent:  # killed (by its pid) on the way out, whatever happens
            agent.wait_for_line(lambda line: line == WATCHING, timeout=START_BOUND)
            rss = [_rss(agent.proc.pid)]
            storms = []
            for seed in (1, 2):
                storm = _storm(tree, seed)
                storm.repair = _wait_repaired(agent, tree, tmp_path / "state")
                storms.append(storm)
                rss.append(_rss(agent.proc.pid))
            assert agent.proc.poll() is None, agent.err
            assert tree.wrong(set(range(len(tree.paths)))) == set()
    finally:  # 10,000 files and the state are not left in pytest's kept tmp directories
        for entry in tmp_path.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
    figures = "; ".join(
        f"storm {n}: {s.edits} edits {s.made} in {s.editing:.1f} s, repaired in "
        f"{s.repair:.1f} s, RSS {_mib(rss[n - 1])} -> {_mib(rss[n])}"
        for n, s in enumerate(storms, 1)
    )
    print(figures)
    for storm in storms:  # the editor kept (nearly) its pace: this was a storm
        assert storm.edits >= 0.8 * RATE * STORM, figures
    assert rss[1] - rss[0] < WARM_BOUND, f"memory grew over the first storm: {figures}"
    assert rss[2] - rss[1] < GROWTH_BOUND, f"memory grew over the second storm: {figures}"
