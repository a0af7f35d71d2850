"""A site policy with bundles and invocations, written into a test's directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.agent import TIMEOUT

__all__ = ["invoke", "run", "site"]


def site(tmp_path: Path, guard: str = "", extra: str = "") -> Path:
    """``tmp_path/policy.yaml``: bundles ``web`` (two uses, each after ``base``) and
    ``db``; invocation ``deploy`` runs ``web`` (``guard`` is its guard: block), and
    ``both`` may run ``web`` and ``db``. Files go to ``tmp_path/out``."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""\
vars:
  release: "1.0"
bundles:
  web:
    params:
      port: {{type: int, default: 80}}
    resources:
      - file: "{out}/web-{{{{ name }}}}.conf"
        content: "port={{{{ port }}}} release={{{{ release }}}}\\n"
        require: [file[{out}/base]]
  db:
    resources:
      - file: "{out}/db-{{{{ name }}}}.conf"
        content: "db\\n"
invocations:
  deploy:
    methods: [web]
    switches:
      release: {{type: str, default: "1.0"}}
      token: {{type: secret, default: "unset"}}
{guard}
  both:
    methods: [web, db]
resources:
  - file: {out}/base
    content: "base\\n"
  - file: {out}/other
    content: "other\\n"
  - web: main
    port: 8080
  - web: backup
  - db: main
{extra}"""
    )
    return policy


def invoke(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``convergent invoke POLICY ARGS`` with the state directory beside the policy and
    stdin not a terminal."""
    return run("invoke", str(policy), *args, "--state-dir", str(policy.parent / "state"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m convergent ARGS`` to completion, stdin /dev/null (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
