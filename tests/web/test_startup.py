"""A run without ``--http`` pays nothing for the web view: none of its modules, nor
starlette, uvicorn or the engine's observer side, is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_run_without_http_imports_nothing_of_the_web_view(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    made = tmp_path / "f"
    policy.write_text(f'resources:\n  - file: {made}\n    content: "x\\n"\n')
    code = (
        "import sys\n"
        "from convergent.cli.main import main\n"
        f"code = main(['run', {str(policy)!r}, '--converged-timeout', '0',"
        f" '--state-dir', {str(tmp_path / 'state')!r}])\n"
        "assert code == 0, code\n"
        "heavy = ('convergent.web', 'convergent.engine.follow', 'starlette', 'uvicorn')\n"
        "found = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "assert not found, found\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert made.read_text() == "x\n"
