"""`--log-format json` and the journal's priorities, through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import convergent

SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 60.0


def _secret_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(f"""\
        resources:
          - password: db
            length: 24
          - file: {tmp_path}/db.conf
            mode: "0600"
            recv:
              content: password[db].password
          - exec: leak
            cmd: "true"
            shell: true
            recv:
              cmd: password[db].password
          - noop: after
            require: exec[leak]
        """)
    )
    return policy


def _run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("JOURNAL_STREAM", None)
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        env=env,
        text=True,
        timeout=BOUND,
        check=False,
        **kwargs,
    )


def test_json_lines_carry_time_level_host_resource_event_summary_and_no_secret(
    tmp_path: Path,
) -> None:
    policy = _secret_policy(tmp_path)
    state = str(tmp_path / "state")
    run = ["run", str(policy), "--state-dir", state, "--converged-timeout", "0"]
    done = _run(*run, "--log-format", "json", capture_output=True)
    assert done.returncode == 1
    secret = (tmp_path / "db.conf").read_text()
    assert len(secret) == 24
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.stderr == ""  # one stream for the log shipper
    for record in records:
        assert list(record)[:6] == ["time", "level", "host", "resource", "event", "summary"]
        assert record["time"].endswith("Z") and record["host"] == os.uname().nodename
    by_event = {(r["event"], r["resource"]): r for r in records}
    assert by_event[("changed", "password[db]")]["level"] == "info"
    failed = by_event[("failed", "exec[leak]")]
    assert failed["level"] == "error" and failed["exit_code"] == 127  # sh: the secret is no command
    assert "<secret>" in failed["summary"]
    blocked = by_event[("blocked", "noop[after]")]
    assert blocked["level"] == "warning" and blocked["upstream"] == "exec[leak]"
    assert records[-1]["event"] == "summary" and records[-1]["summary"].startswith("resources: 4")

    (tmp_path / "db.conf").write_text("not the password\n")
    noop = _run(*run, "--noop", "--log-format", "json", capture_output=True)
    would = [json.loads(line) for line in noop.stdout.splitlines()]
    (change,) = [r for r in would if r["resource"] == f"file[{tmp_path}/db.conf]"]
    assert change["event"] == "would_change" and change["diff"] == "content changed (secret)"
    for output in (done.stdout, noop.stdout, noop.stderr):
        assert secret not in output


def test_json_escapes_what_a_command_prints(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n  - exec: talk\n    cmd: [printf, 'a\\x1b[31mred\\u202e\\nb\\n']\n"
    )
    done = _run(
        "run", str(policy), "--state-dir", str(tmp_path / "st"), "--converged-timeout", "0",
        "--log-format", "json", capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    assert all(line.isascii() for line in done.stdout.splitlines())


def test_lines_to_the_journal_start_with_their_priority(tmp_path: Path) -> None:
    policy = _secret_policy(tmp_path)
    log = tmp_path / "journal"
    with open(log, "w") as stream:  # stdout and stderr are both the journal's stream
        st = os.fstat(stream.fileno())
        done = _run(
            "run", str(policy), "--state-dir", str(tmp_path / "st"), "--converged-timeout", "0",
            stdout=stream, stderr=stream, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
        )  # fmt: skip
    assert done.returncode == 1
    lines = log.read_text().splitlines()
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
    assert "<6>password[db]: generated" in lines
    assert any(line.startswith("<3>exec[leak]: FAILED") for line in lines)
    assert "<4>noop[after]: blocked: exec[leak] failed" in lines


def test_no_priority_prefix_when_the_stream_is_not_the_journal(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n  - noop: a\n")
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    done = _run(
        "run", str(policy), "--state-dir", str(tmp_path / "st"), "--converged-timeout", "0",
        capture_output=True, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.startswith("resources: 1")


def test_an_unknown_log_format_is_a_usage_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n  - noop: a\n")
    done = _run("run", str(policy), "--log-format", "xml", capture_output=True)
    assert done.returncode == 2
    assert "'xml': give text" in done.stderr
