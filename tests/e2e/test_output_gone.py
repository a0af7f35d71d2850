"""An agent whose output has no reader any more (a closed pipe: `convergent run ... | tee`
with tee gone, an ended SSH session) goes on keeping its state, and SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.waits import until_in

BOUND = 30.0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_agent_whose_reader_is_gone_still_repairs_and_stops_on_sigterm(
    tmp_path: Path, log_format: str
) -> None:
    kept = tmp_path / "files" / "kept"
    policy = tmp_path / "site.yaml"
    policy.write_text(
        f"resources:\n  - file: {kept.parent}\n    state: directory\n"
        f'  - file: {kept}\n    content: "kept\\n"\n',
        encoding="utf-8",
    )
    reader, writer = os.pipe()
    agent = subprocess.Popen(
        [sys.executable, "-m", "convergent", "run", str(policy), "--log-format", log_format,
         "--state-dir", str(tmp_path / "state")],
        stdout=writer, stderr=writer, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(writer)
    try:
        hung = threading.Timer(BOUND, agent.kill)  # a silent agent ends the read below
        hung.start()
        try:
            with os.fdopen(reader, "rb") as out:
                for line in out:  # until the agent says it converged and watches
                    if b"watching for changes" in line or b'"converged"' in line:
                        break
                else:
                    pytest.fail(f"the agent ended before converging: {agent.wait(BOUND)}")
        finally:
            hung.cancel()
        # The read end is closed: the agent's next line fails with EPIPE.
        kept.unlink()
        until_in(kept.parent, kept.exists, BOUND, f"{kept} restored with no reader")
        assert kept.read_text() == "kept\n"
        kept.write_text("drifted\n")  # a second repair, after the stream went to /dev/null
        until_in(kept.parent, lambda: kept.read_text() == "kept\n", BOUND, f"{kept} repaired again")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(BOUND) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
