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


AGENT = """
import atexit, runpy, sys
def said():
    print("loaded:", " ".join(m for m in ("grpc", "aetcd", "ssl", "google.protobuf")
                              if m in sys.modules) or "-", flush=True)
atexit.register(said)
sys.argv = ["convergent", "run", sys.argv[1], "--converged-timeout", "0", "--hostname", "a",
            "--state-dir", sys.argv[2], "--etcd-endpoints", sys.argv[3], "--insecure"]
runpy.run_module("convergent", run_name="__main__")
"""


def test_an_agent_on_a_plaintext_etcd_world_loads_neither_grpc_nor_ssl(tmp_path: Path) -> None:
    """The gateway wire: the agent's world (discovery, session, watches, exports) goes
    over HTTP with the standard library; grpc, its stubs and OpenSSL stay unloaded."""
    from tests.etcd_support import etcd_member, require_etcd

    require_etcd()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f"  - file: {tmp_path / 'got'}/\n"
        "    state: directory\n"
        f"  - file: {tmp_path / 'shared'}\n"
        '    content: "exported\\n"\n'
        "    meta: {export: true}\n"
        "  - kv: greeting\n"
        '    value: "hello"\n'
        "collect:\n  - kind: file\n"
        f"    pattern: {tmp_path / 'got'}/\n"
    )
    with etcd_member(tmp_path / "etcd") as member:
        done = subprocess.run(
            [sys.executable, "-c", AGENT, str(policy), str(tmp_path / "state"), member.endpoint],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "CONVERGENT_ETCD_WIRE"},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded: -", done.stdout
    assert (tmp_path / "got" / "shared").read_text() == "exported\n"
