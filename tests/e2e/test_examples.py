"""Every example a new user runs first works as its README section says."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_python_api_example_converges_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "api"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello_api.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "f1").read_text() == "i am f1\n"
    assert stat.S_IMODE(os.stat(root / "f2").st_mode) == 0o600
    assert (root / "built").read_text() == "i am f1\ni am f2\n"
    assert "noop[done]: notified by exec[build]" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("resources: 5, changed: 4, failed: 0")
