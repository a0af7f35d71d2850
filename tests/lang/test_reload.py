"""A policy `convergent run` reloads keeps the command line's inputs (--set, --class,
--set-secret): the real command, in a subprocess."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.agent import Agent

WATCHING = "converged; watching for changes (Ctrl-C to stop)"
POLICY = """\
vars: {{greeting: hello}}
resources:
  - file: {root}/out
    content: "{{{{ greeting }}}} {{{{ who }}}} {{{{ pw }}}} {version}\\n"
  - file: {root}/web
    content: "web\\n"
    if: web
"""


def test_a_reload_keeps_set_class_and_secrets(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    policy = tmp_path / "site.yaml"
    policy.write_text(POLICY.format(root=root, version="v1"))
    args = ("--set", "who=world", "--class", "web", "--set-secret", "pw=s3cr3tvalue")
    with Agent("run", str(policy), "--state-dir", str(tmp_path / "state"), *args) as agent:
        agent.wait_for_line(lambda line: line == WATCHING)
        assert (root / "out").read_text() == "hello world s3cr3tvalue v1\n"
        temp = tmp_path / "site.tmp"
        temp.write_text(POLICY.format(root=root, version="v2"))
        temp.replace(policy)
        agent.wait_for_line(lambda line: line.startswith("policy reloaded"))
        agent.wait_for_line(lambda line: line == "converged")
        agent.send(signal.SIGTERM)
        assert agent.wait() == 0, agent.err
    assert (root / "out").read_text() == "hello world s3cr3tvalue v2\n"
    assert (root / "web").read_text() == "web\n"
    assert not any("s3cr3t" in line for line in agent.out + agent.err)
