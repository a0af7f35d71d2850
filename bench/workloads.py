"""One description per workload, from which every tool's policy is generated.

A workload is pure data: the files that must exist afterwards (relative name, content,
mode), the commands to run (argv, what they require), and how the target directory is
prepared before the timed run (empty, already converged, or converged less a few files).
Each tool's generator in :mod:`policies` turns the same :class:`Workload` into its own
language, so every tool does exactly the same work, and :func:`verify` checks afterwards
that the directory holds exactly the expected files, no more, no fewer.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = [
    "FILE_WORKLOADS",
    "W8_PACKAGES",
    "CommandSpec",
    "FileSpec",
    "Prepare",
    "Workload",
    "create",
    "drift",
    "packages",
    "parallel",
    "prepare",
    "rewritten",
    "snapshot",
    "verify",
]

FILE_WORKLOADS = ("W1", "W2", "W3", "W4")
W8_PACKAGES = ("sl", "cowsay", "hello")  # small Debian packages; cowsay pulls in one more


class Prepare(Enum):
    """The state of the target directory before the timed run."""

    EMPTY = "empty"
    CONVERGED = "converged"
    DAMAGED = "converged, then some files deleted"


@dataclass(frozen=True, slots=True)
class FileSpec:
    """A regular file that must exist, relative to the target directory."""

    name: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command to run once; ``marker`` is the file it leaves behind as proof it ran."""

    name: str
    argv: tuple[str, ...]
    requires: tuple[str, ...] = ()
    marker: str = ""


@dataclass(frozen=True, slots=True)
class Workload:
    """What every tool must do, and the state it starts from.

    ``key`` is the workload's id (W1..W9), ``size`` the number of files. The target
    directory is only known at run time, so paths are relative names; generators get
    the absolute directory as an argument.
    """

    key: str
    title: str
    size: int
    files: tuple[FileSpec, ...] = ()
    commands: tuple[CommandSpec, ...] = ()
    prepare: Prepare = Prepare.EMPTY
    damaged: tuple[str, ...] = ()
    ideal: str = ""

    @property
    def label(self) -> str:
        """Row label in the results table, e.g. ``W1 create 1,000``, ``W7 check 10,000``."""
        return f"{self.key.split('-')[0]} {self.title}"


def _files(size: int) -> tuple[FileSpec, ...]:
    width = max(4, len(str(size - 1)))
    return tuple(FileSpec(f"f{i:0{width}d}", f"i am f{i:0{width}d}\n", 0o644) for i in range(size))


def create(key: str, size: int) -> Workload:
    """W1/W2/W3/W4/W7: ``size`` files ``fNNNN`` with content ``i am fNNNN``, mode 0644.

    W1 and W3 start from an empty directory, W2 from the converged state, W4 from the
    converged state with 10 files deleted. W7 uses W1 (``W7-create``) and W2
    (``W7-check``) at 10,000 and 100,000 files.
    """
    files = _files(size)
    if key in ("W1", "W3", "W7-create"):
        title = "create" if key != "W3" else "small"
        return Workload(key, f"{title} {size:,}", size, files, prepare=Prepare.EMPTY)
    if key in ("W2", "W7-check"):
        return Workload(key, f"check {size:,}", size, files, prepare=Prepare.CONVERGED)
    if key == "W4":
        step = max(1, size // 10)
        damaged = tuple(files[i].name for i in range(0, size, step))[:10]
        return Workload(
            key,
            f"repair {len(damaged)} of {size:,}",
            size,
            files,
            prepare=Prepare.DAMAGED,
            damaged=damaged,
        )
    raise ValueError(f"unknown file workload {key!r}: use one of {FILE_WORKLOADS} or W7-*")


def drift(size: int) -> Workload:
    """W5: the files an agent keeps converged while the harness damages them."""
    return Workload("W5", f"drift latency, {size:,} watched files", size, _files(size))


def parallel() -> Workload:
    """W6: four 1 s commands, three of them chained; ideal wall time 3 s.

    Each command leaves a marker file (``step-N.done``) so the result can be verified
    like any other: the markers must all exist and the chain's must be in order.
    """
    names = ("step-1", "step-2", "step-3", "independent")
    requires = {"step-2": ("step-1",), "step-3": ("step-2",)}
    commands = tuple(
        CommandSpec(
            name,
            ("/bin/sh", "-c", f"sleep 1 && echo done > {name}.done"),
            requires.get(name, ()),
            marker=f"{name}.done",
        )
        for name in names
    )
    return Workload("W6", "parallel 4 x 1 s, 3 chained", 0, commands=commands, ideal="3 s")


def packages() -> Workload:
    """W8: install three small packages from removed, then check them installed.

    Not a file workload: ``bench/packages.py`` runs it (removing the packages before each
    timed install, putting the machine back as it was at the end)."""
    names = "+".join(W8_PACKAGES)
    return Workload("W8", f"install {names}", len(W8_PACKAGES), ideal="one apt-get install")


def prepare(workload: Workload, target: Path) -> None:
    """Bring ``target`` (an existing, empty directory) to the workload's start state."""
    if workload.prepare is Prepare.EMPTY:
        return
    for spec in workload.files:
        path = target / spec.name
        path.write_text(spec.content)
        path.chmod(spec.mode)
    for name in workload.damaged:
        (target / name).unlink()


def verify(workload: Workload, target: Path) -> list[str]:
    """Problems with what a tool left in ``target``; empty when the result is exact.

    Checks every expected file's content and mode, that no other file exists (backups,
    temp files), that every command's marker exists and that chained commands ran in
    order (each marker written at least 0.9 s after the one it requires).
    """
    problems: list[str] = []
    expected: dict[str, FileSpec | None] = {spec.name: spec for spec in workload.files}
    expected.update({cmd.marker: None for cmd in workload.commands if cmd.marker})
    present = set(os.listdir(target))
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
    wrong = 0
    first = ""
    for name, spec in expected.items():
        if name in missing:
            continue
        path = target / name
        st = path.lstat()
        if spec is None:
            ok = stat.S_ISREG(st.st_mode) and path.read_text() == "done\n"
            why = "marker is not 'done'"
        else:
            ok = stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == spec.mode
            ok = ok and path.read_bytes() == spec.content.encode()
            why = f"content or mode (mode {stat.S_IMODE(st.st_mode):04o})"
        if not ok:
            wrong += 1
            first = first or f"{name}: {why}"
    if wrong:
        problems.append(f"{wrong} wrong, e.g. {first}")
    if not missing:
        by_name = {cmd.name: cmd for cmd in workload.commands}
        for cmd in workload.commands:
            mine = (target / cmd.marker).stat().st_mtime
            for upstream in cmd.requires:
                theirs = (target / by_name[upstream].marker).stat().st_mtime
                if mine - theirs < 0.9:
                    problems.append(f"{cmd.name} did not wait for {upstream}")
    return problems


def snapshot(target: Path) -> dict[str, tuple[int, int]]:
    """Inode and mtime of every file in ``target``, to tell which ones a run rewrote."""
    out: dict[str, tuple[int, int]] = {}
    with os.scandir(target) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            out[entry.name] = (st.st_ino, st.st_mtime_ns)
    return out


def rewritten(before: dict[str, tuple[int, int]], target: Path) -> int:
    """How many files present in ``before`` were replaced or written to since."""
    after = snapshot(target)
    return sum(1 for name, sig in before.items() if after.get(name) != sig)
