"""A refresh is never lost: kill -9 the agent at chosen points, restart it, the refresh runs.

The policy: ``file[app.conf]`` with ``notify: exec[x]``; ``exec[x]`` (``refresh_only``)
appends a line to a marker file. The agent is killed the moment a chosen inotify event
happens (the file's temp file appears, the file is renamed into place, the state
database's WAL is written, the marker is written), then run again to convergence: the
marker must hold a line (at least once), and a third run must not refresh again (the
pending row was removed once handled).
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, convergent
from tests.e2e.killer import IN_CLOSE_WRITE, IN_CREATE, IN_MODIFY, IN_MOVED_TO, KillOn

CONF = "app.conf"


def _policy(tmp_path: Path) -> tuple[Path, Path, Path]:
    managed, marker = tmp_path / "managed", tmp_path / "marker"
    managed.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - file: {managed / CONF}
                content: "listen 8080\\n"
                notify: exec[x]
              - exec: x
                cmd: "echo ran >> {marker}"
                shell: true
                refresh_only: true
            """
        ),
        encoding="utf-8",
    )
    return policy, managed, marker


# (where, events, which name, nth): where is "managed", "state" or "work".
KillPoint = tuple[str, int, Callable[[str], bool], int]
POINTS: dict[str, KillPoint] = {
    "temp-file-created": ("managed", IN_CREATE, lambda n: n != CONF, 1),
    "renamed-into-place": ("managed", IN_MOVED_TO, lambda n: n == CONF, 1),
    "state-wal-write-1": ("state", IN_MODIFY, lambda n: n == "state.db-wal", 1),
    "state-wal-write-2": ("state", IN_MODIFY, lambda n: n == "state.db-wal", 2),
    "state-wal-write-3": ("state", IN_MODIFY, lambda n: n == "state.db-wal", 3),
    "marker-written": ("work", IN_MODIFY | IN_CLOSE_WRITE, lambda n: n == "marker", 1),
}


@pytest.mark.parametrize("point", sorted(POINTS))
def test_refresh_survives_kill(tmp_path: Path, point: str) -> None:
    policy, managed, marker = _policy(tmp_path)
    state = tmp_path / "state"
    # An initialised state directory (an earlier run of a policy that does nothing), so
    # the WAL events below are the ones this policy causes.
    empty = tmp_path / "empty.yaml"
    empty.write_text("resources:\n  - noop: start\n", encoding="utf-8")
    done = convergent("run", str(empty), "--state-dir", str(state), "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    where, mask, name, nth = POINTS[point]
    directory = {"managed": managed, "state": state, "work": tmp_path}[where]
    args = ("run", str(policy), "--state-dir", str(state))
    # No --converged-timeout: the first agent runs until killed.
    with KillOn(directory, mask, name, nth) as killer, Agent(*args) as first:
        killer.start(first.proc.pid)
        assert killer.fired.wait(20), f"no such event; seen {killer.events}, {first.out}"
        assert first.wait() == -signal.SIGKILL
    second = convergent(*args, "--converged-timeout", "0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (managed / CONF).read_text(encoding="utf-8") == "listen 8080\n"
    lines = marker.read_text(encoding="utf-8").splitlines() if marker.exists() else []
    assert lines and set(lines) == {"ran"}, (lines, first.out, second.stdout)
    third = convergent(*args, "--converged-timeout", "0")
    assert third.returncode == 0, third.stdout + third.stderr
    assert marker.read_text(encoding="utf-8").splitlines() == lines  # handled: not again
