"""``line``, ``cron`` and ``download`` on a path in a local user's directory: her FIFO
or symlink swapped in for the file, again and again, never hangs a run, is never
written through, and never leaves root's file changed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.host.hostile import NOBODY, Hostile, exchange, needs_root

pytestmark = needs_root


# Ten runs. A run ends once both resources are right between two of the user's swaps,
# which she makes as fast as she can on 2 cores: 0.1-19 s a run measured here, more under
# the rest of the suite's load (one went past 30 s). So each run has her swapping for
# 10 s at most; then she stops, and the run must end within 30 s: a run blocked on her
# FIFO (a hang) would not, a run chasing her swaps does.
@pytest.mark.timeout(500)
def test_line_and_cron_never_hang_on_or_write_through_a_swapped_in_fifo_or_symlink(
    open_lab: Path, kill_at_end: list[int]
) -> None:
    precious = open_lab / "precious"
    precious.write_text("root's\n")
    precious.chmod(0o600)
    home = open_lab / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)

    def prepare() -> None:
        (home / "conf").write_text("a\n")
        os.mkfifo(home / "fifo")
        (home / "link").symlink_to(precious)
        (home / "cron").mkdir()
        (home / "cron" / "job").write_text("# hers\n")
        os.mkfifo(home / "cron" / "fifo")

    with Hostile(lambda stopped: prepare()):
        pass
    policy = open_lab / "p.yaml"
    policy.write_text(
        f"resources:\n  - line: {home}/conf\n    text: added\n"
        f"  - cron: job\n    cron_dir: {home}/cron\n    cmd: 'true'\n    special: daily\n"
    )

    def swap(stopped):  # type: ignore[no-untyped-def]
        n = 0
        while not stopped() and n < 5_000_000:
            n += exchange(f"{home}/conf", f"{home}/fifo")
            n += exchange(f"{home}/conf", f"{home}/link")
            n += exchange(f"{home}/cron/job", f"{home}/cron/fifo")
        return n

    swaps = 0
    for round_ in range(10):
        out, err = open_lab / f"out{round_}", open_lab / f"err{round_}"
        with out.open("w") as stdout, err.open("w") as stderr, Hostile(swap) as user:
            argv = ["run", "--converged-timeout", "0", "--state-dir", str(open_lab / "state")]
            run = subprocess.Popen(
                [sys.executable, "-m", "convergent", *argv, str(policy)],
                stdout=stdout,
                stderr=stderr,
            )
            kill_at_end.append(run.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(timeout=10)  # it ends between two swaps, or goes on chasing them
        swaps += user.result
        run.wait(timeout=30)  # she has stopped: a chase ends now, a hang would not
        assert "Traceback" not in err.read_text(), err.read_text()
    assert swaps > 0
    assert precious.read_text() == "root's\n"
    st = precious.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
