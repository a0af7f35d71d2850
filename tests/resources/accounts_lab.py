"""Real users and groups for tests: names with a test prefix, removed in finally.

``Accounts`` hands out names that no account on the host has (``cvt8`` + random hex)
and free ids; at the end every user and group it handed out is removed with userdel -r /
groupdel, even when the test failed. An account the host had before is never touched:
a name is handed out only after checking that neither /etc/passwd nor /etc/group has it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agent import TIMEOUT

__all__ = [
    "Accounts",
    "accounts",
    "changed",
    "entry",
    "group_file",
    "needs_shadow",
    "ok",
    "passwd",
    "policy",
    "run",
    "shadow",
]

PREFIX = "cvt8"
needs_shadow = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/useradd").exists(),
    reason="needs root and the shadow tools (useradd) to create real accounts",
)


def _table(path: str) -> dict[str, list[str]]:
    rows = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 3:
            rows[parts[0]] = parts
    return rows


def passwd() -> dict[str, list[str]]:
    return _table("/etc/passwd")


def group_file() -> dict[str, list[str]]:
    return _table("/etc/group")


def shadow() -> dict[str, list[str]]:
    return _table("/etc/shadow")


class Accounts:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.users: list[str] = []
        self.groups: list[str] = []
        self._ids: set[int] = set()

    def name(self) -> str:
        """A user/group name no account on the host has; removed at the end."""
        while True:
            name = PREFIX + os.urandom(3).hex()
            if name not in passwd() and name not in group_file():
                self.users.append(name)
                self.groups.append(name)  # useradd may make a group of that name
                return name

    def free_id(self) -> int:
        """An id no user and no group has (in 47000-47999)."""
        taken = {int(r[2]) for r in passwd().values()} | {int(r[2]) for r in group_file().values()}
        for number in range(47000, 48000):
            if number not in taken and number not in self._ids:
                self._ids.add(number)
                return number
        raise AssertionError("no free id in 47000-47999")

    def cleanup(self) -> None:
        for name in self.users:
            if name in passwd():
                subprocess.run(["userdel", "-r", name], capture_output=True, timeout=TIMEOUT)
            for leftover in (Path("/home") / name, Path("/var/mail") / name):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                elif leftover.exists():
                    leftover.unlink()
        for name in self.groups:
            if name in group_file():
                subprocess.run(["groupdel", name], capture_output=True, timeout=TIMEOUT)


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[Accounts]:
    lab = Accounts(tmp_path)
    try:
        yield lab
    finally:
        lab.cleanup()


def policy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("resources:\n" + body)
    return path


def run(tmp_path: Path, body: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``convergent run`` of ``body`` (policy entries) once, with a state dir in tmp_path."""
    path = policy(tmp_path, body)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "convergent",
            "run",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
            "--converged-timeout",
            "0",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def entry(kind: str, name: str, **params: Any) -> str:
    """One policy entry, its parameters as JSON values."""
    lines = [f"  - {kind}: {name}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


def ok(done: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a run that must have succeeded."""
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    return done.stdout


def changed(out: str) -> int:
    """The resources a run changed: M of its summary's ``repaired: N (M resources)``."""
    match = re.search(r"repaired: (\d+)(?: \((\d+) resources?\))?", out)
    assert match, out
    return int(match.group(2) or 0)
