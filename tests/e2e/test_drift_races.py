"""Someone changing a watched file right after the agent repaired it: the real agent
sees it and repairs again, whatever the kernel did with the two events."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.agent import Agent
from tests.waits import Inotify

WATCHING = "converged; watching for changes (Ctrl-C to stop)"
IN_MOVED_TO = 0x80
ROUNDS = 20
BOUND = 10.0  # seconds for the agent to repair once more; it takes milliseconds


@pytest.mark.timeout(120)
def test_a_file_renamed_over_the_agents_repair_at_once_is_repaired_again(
    tmp_path: Path,
) -> None:
    """Each round removes the file, waits for the agent's repair (its rename into place)
    and at once renames another file over it from a directory the agent does not watch,
    before the agent has read the events of its own rename. inotify then merges that
    rename's event into the agent's own (same watch, mask and name; the cookie of the
    first is kept). An agent that took the merged event for its own rename alone left the
    file wrong for good: it failed in round 0 or 1 of each of 6 runs here."""
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()  # same file system, watched by no one
    target = watched / "f"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"resources:\n  - file: {target}\n    content: ours\n")
    args = ("run", str(policy), "--state-dir", str(tmp_path / "state"))

    def to_f(mask: int, name: str) -> bool:
        return name == "f"

    with Agent(*args) as agent:
        agent.wait_for_line(lambda line: line == WATCHING, timeout=30)
        with Inotify(watched, IN_MOVED_TO) as renames:
            for n in range(ROUNDS):
                theirs = elsewhere / f"theirs{n}"
                theirs.write_bytes(b"theirs\n")
                renames.read()  # the round waits for the repair of its own deletion
                target.unlink()
                deadline = time.monotonic() + BOUND
                assert renames.wait(to_f, deadline), f"round {n}: no repair of the deletion"
                os.rename(theirs, target)  # right after the agent's rename
                while target.read_bytes() != b"ours":
                    assert renames.wait(to_f, deadline), (
                        f"round {n}: {target} still holds {target.read_bytes()!r} "
                        f"{BOUND} s after another file was renamed over it\n"
                        f"stdout: {agent.out[-6:]}\nstderr: {agent.err[-6:]}"
                    )
        assert agent.proc.poll() is None, agent.err
