"""A ``process`` kind's log under the state directory is capped at 1 MiB (rotated), as
the README says, even for a process that outlives the agent (as it is meant to)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

from convergent.resources.procfiles import LOG_LIMIT
from tests.e2e.agent import convergent
from tests.waits import keepers_of, open_fifo_writer, until_exited


def test_a_process_log_stays_capped_after_the_agent_is_gone(tmp_path: Path) -> None:
    """The process writes 8 MiB only once the one-shot agent is gone (it waits on a FIFO
    the test opens after the run), so no agent runs while its log grows; then it ends,
    and its log's keeper with it."""
    state, policy, go = tmp_path / "state", tmp_path / "p.yaml", tmp_path / "go"
    os.mkfifo(go)
    policy.write_text(
        "resources:\n  - process: spew\n    cmd: [sh, -c, "
        f"'cat {go} >/dev/null; head -c {8 * LOG_LIMIT} /dev/zero; echo; echo done']\n"
    )
    done = convergent(
        "run", "--converged-timeout", "0", "--state-dir", str(state), str(policy), timeout=60
    )
    found = re.search(r"started \(pid (\d+); output to (\S+)\)", done.stdout)
    assert found, done.stdout + done.stderr
    pid, log = int(found.group(1)), Path(found.group(2))
    keepers = keepers_of(log)
    assert len(keepers) == 1, keepers
    try:
        os.close(open_fifo_writer(go, 30))  # the agent has exited: the process writes now
        until_exited(pid, 30)
        until_exited(keepers[0], 30)  # its pipe's last writer is gone: the keeper ends
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    assert log.stat().st_size <= LOG_LIMIT, f"the log holds {log.stat().st_size:,} bytes"
    assert log.read_bytes() == b"\ndone\n"  # the eighth MiB filled the log before
    assert Path(f"{log}.1").read_bytes() == bytes(LOG_LIMIT)
