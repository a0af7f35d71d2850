"""``line``, ``cron`` and ``download`` on a path in a local user's directory: her FIFO
or symlink swapped in for the file, again and again, never hangs a run, is never
written through, and never leaves root's file changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root

pytestmark = needs_root


# Ten runs, each bounded (30 s: a hang). A run ends once both resources are right between
# two of the user's swaps, which she makes as fast as she can on 2 cores: 0.1-19 s a run
# measured here, and more under the rest of the suite's load (one `make test` passed 60 s).
@pytest.mark.timeout(330)
def test_line_and_cron_never_hang_on_or_write_through_a_swapped_in_fifo_or_symlink(
    open_lab: Path,
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

    with Hostile(swap) as user:
        for _ in range(10):
            done = convergent(
                "run",
                "--converged-timeout",
                "0",
                "--state-dir",
                str(open_lab / "state"),
                str(policy),
                timeout=30,
            )  # a hang would be a TimeoutExpired
            assert "Traceback" not in done.stderr, done.stderr
    assert user.result > 0
    assert precious.read_text() == "root's\n"
    st = precious.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0)
