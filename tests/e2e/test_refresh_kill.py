"""A refresh is never lost: kill -9 the agent at chosen points, restart it, the refresh runs.

The policy: ``file[app.conf]`` with ``notify: exec[x]``; ``exec[x]`` (``refresh_only``)
appends a line to a marker file. The agent is killed the moment a chosen inotify event
happens (the file's temp file appears, the file is renamed into place, the marker is
written), or by strace at the entry of its nth write or sync of the state database's WAL
(exact: inotify merges a write's event into an identical one still unread, so it cannot
count writes), then run again to convergence: the marker must hold a line (at least
once), and a third run must not refresh again (the pending row was removed once handled).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.agent import TIMEOUT, Agent, convergent
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


# (where, events, which name, nth): where is "managed" or "work".
KillPoint = tuple[str, int, Callable[[str], bool], int]
POINTS: dict[str, KillPoint] = {
    "temp-file-created": ("managed", IN_CREATE, lambda n: n != CONF, 1),
    "renamed-into-place": ("managed", IN_MOVED_TO, lambda n: n == CONF, 1),
    "marker-written": ("work", IN_MODIFY | IN_CLOSE_WRITE, lambda n: n == "marker", 1),
}
# The run's WAL calls (strace of this policy's run): the first transaction (the pending
# refresh) writes the header, a frame's header and its page, then syncs; the second (the
# refresh handled) a frame's header and its page, then syncs; the checkpoint at the end
# syncs once more. Killed at the entry of each: (system call, nth).
WAL_POINTS: dict[str, tuple[str, int]] = {
    **{f"state-wal-write-{n}": ("pwrite64", n) for n in range(1, 6)},
    **{f"state-wal-sync-{n}": ("fdatasync", n) for n in range(1, 5)},
}


def _initialised(tmp_path: Path) -> Path:
    """An initialised state directory (an earlier run of a policy that does nothing), so
    the WAL calls counted are the ones the policy under test causes."""
    state = tmp_path / "state"
    empty = tmp_path / "empty.yaml"
    empty.write_text("resources:\n  - noop: start\n", encoding="utf-8")
    done = convergent("run", str(empty), "--state-dir", str(state), "--converged-timeout", "0")
    assert done.returncode == 0, done.stderr
    return state


@pytest.mark.parametrize("point", sorted(POINTS))
def test_refresh_survives_kill(tmp_path: Path, point: str) -> None:
    policy, managed, marker = _policy(tmp_path)
    state = _initialised(tmp_path)
    where, mask, name, nth = POINTS[point]
    directory = {"managed": managed, "work": tmp_path}[where]
    args = ("run", str(policy), "--state-dir", str(state))
    # No --converged-timeout: the first agent runs until killed.
    with KillOn(directory, mask, name, nth) as killer, Agent(*args) as first:
        killer.start(first.proc.pid)
        assert killer.fired.wait(20), f"no such event; seen {killer.events}, {first.out}"
        assert first.wait() == -signal.SIGKILL
    _converges_once(args, managed, marker, first.out)


@pytest.mark.parametrize("point", sorted(WAL_POINTS))
def test_refresh_survives_kill_in_the_state_database(tmp_path: Path, point: str) -> None:
    """strace kills the agent at the entry of its nth ``pwrite64`` or ``fdatasync`` of
    ``state.db-wal`` (the count is of that file's calls alone, ``-P``)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (Debian: apt-get install strace; make test)")
    policy, managed, marker = _policy(tmp_path)
    state = _initialised(tmp_path)
    call, nth = WAL_POINTS[point]
    args = ("run", str(policy), "--state-dir", str(state))
    trace = tmp_path / "trace"
    tracer = [strace, "-f", "-o", str(trace), "-P", str(state / "state.db-wal")]
    tracer += ["-e", f"trace={call}", "-e", f"inject={call}:signal=KILL:when={nth}"]
    first = subprocess.run(
        [*tracer, sys.executable, "-m", "convergent", *args, "--converged-timeout", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    said = trace.read_text(encoding="utf-8") if trace.exists() else ""
    # strace ends as its tracee did: killed, or the run made fewer such calls than nth
    # (then this table of calls needs updating to the run's)
    assert first.returncode == -signal.SIGKILL, (first.returncode, said, first.stdout)
    assert "killed by SIGKILL" in said, said
    _converges_once(args, managed, marker, first.stdout.splitlines())


def _converges_once(args: tuple[str, ...], managed: Path, marker: Path, out: list[str]) -> None:
    """After the kill: a run converges with the refresh done, and a third does not
    refresh again."""
    second = convergent(*args, "--converged-timeout", "0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (managed / CONF).read_text(encoding="utf-8") == "listen 8080\n"
    lines = marker.read_text(encoding="utf-8").splitlines() if marker.exists() else []
    assert lines and set(lines) == {"ran"}, (lines, out, second.stdout)
    third = convergent(*args, "--converged-timeout", "0")
    assert third.returncode == 0, third.stdout + third.stderr
    assert marker.read_text(encoding="utf-8").splitlines() == lines  # handled: not again
