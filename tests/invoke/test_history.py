"""Every invocation is recorded in the state database (who, when, switches with secrets
hidden, outcome) and ``convergent history`` lists them."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

from tests.invoke.site import invoke, run, site

SECRET = "tok-5f1c9e0a77"


def test_history_lists_who_when_switches_and_outcome_with_secrets_hidden(
    tmp_path: Path,
) -> None:
    policy = site(tmp_path, "    guard: {require_noop_first: 30m}\n")
    before = time.time()
    assert invoke(policy, "deploy", "--noop", "--set", f"token={SECRET}").returncode == 0
    assert invoke(policy, "deploy", "--set", f"token={SECRET}").returncode == 0
    assert invoke(policy, "deploy", "--set", f"token={SECRET}").returncode == 3
    state = str(tmp_path / "state")
    listed = run("history", "--json", "--state-dir", state)
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["noop"], r["outcome"]) for r in records] == [
        (True, "ok"),
        (False, "ok"),
        (False, "refused"),
    ]
    me = pwd.getpwuid(os.getuid()).pw_name
    for record in records:
        assert record["invocation"] == "deploy"
        assert record["uid"] == os.getuid() and record["user"] == me
        assert before <= record["started"] <= record["finished"] <= time.time()
        assert record["switches"] == {"release": "1.0", "token": "<secret>"}
        assert record["methods"] == ["web"]
    assert records[0]["would_change"] == 3 and records[1]["changed"] == 3
    assert records[2]["reason"].startswith("require_noop_first:")
    text = run("history", "--state-dir", state)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 3
    assert f"{me}: deploy --noop [web] release=1.0 token=<secret> -> ok" in lines[0]
    assert "-> refused: require_noop_first" in lines[2]
    for name in os.listdir(state):
        if name.startswith("state.db"):
            assert SECRET.encode() not in (Path(state) / name).read_bytes(), name
    assert SECRET not in listed.stdout + text.stdout


def test_history_of_a_host_with_none(tmp_path: Path) -> None:
    done = run("history", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0
    assert "no invocation recorded" in done.stdout
