"""A FIFO (or a symlink) at any of the state directory's own names never hangs the
agent nor is written through: it fails at once with a message naming the file, or (a
temp name) is removed as the leftover it looks like."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.agent import convergent

_NAMES = [
    "lock",
    "lock.shared",
    "state.db",
    "state.db-wal",
    "initialised",
    ".state.db.backup.tmp",
    ".initialised.tmp",
    "children",
    "processes",
]


def _run(state: Path, policy: Path) -> subprocess.CompletedProcess[str]:
    return convergent(
        "run", "--converged-timeout", "0", "--state-dir", str(state), str(policy), timeout=30
    )


@pytest.mark.parametrize("plant", ["fifo", "symlink"])
@pytest.mark.parametrize("name", _NAMES)
def test_a_fifo_or_symlink_at_a_state_file_never_hangs_or_is_followed(
    tmp_path: Path, name: str, plant: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "resources:\n  - password: db\n    length: 16\n"
        "  - process: nap\n    cmd: [sleep, '30']\n    state: stopped\n"
        "  - exec: t\n    cmd: ['true']\n"
    )
    state = tmp_path / "state"
    first = _run(state, policy)  # an initialised directory
    assert first.returncode == 0, first.stderr
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"untouched")
    target = state / name
    if target.is_dir() and not target.is_symlink():
        target.rmdir()
    elif target.exists():
        target.unlink()
    if plant == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to(decoy)
    done = _run(state, policy)  # a hang would be a TimeoutExpired
    assert decoy.read_bytes() == b"untouched"
    assert decoy.stat().st_mode & 0o777 == 0o644
    if done.returncode != 0:
        assert str(state) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
