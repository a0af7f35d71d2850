"""The etcd world costs a run on the local world nothing: grpc is imported when an etcd
world starts, never by importing the world modules or by a plain run with a kv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("grpc" if "grpc" in sys.modules else "no grpc", flush=True))
import convergent.world.etcd, convergent.world.etcdauth, convergent.world.etcdwire
sys.argv = ["convergent", "run", sys.argv[1], "--converged-timeout", "0",
            "--state-dir", sys.argv[2]]
runpy.run_module("convergent", run_name="__main__")
"""


def test_a_plain_run_with_a_kv_never_imports_grpc(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('resources:\n  - kv: greeting\n    value: "hello"\n')
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(policy), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "no grpc", done.stdout
