"""Each guard rail of an invocation, tested by trying to get past it.

The confirmation is typed on a real pseudo-terminal; the age of a noop is changed in the
state database itself (as a clock would), never waited for.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.e2e.agent import TIMEOUT, Agent
from tests.invoke.site import invoke, run, site

_COMMAND = (sys.executable, "-m", "convergent", "invoke")
NOOP_FIRST = "    guard: {require_noop_first: 30m}\n"


def _out(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "out").iterdir())


def test_require_noop_first_refuses_a_real_run_without_its_noop(tmp_path: Path) -> None:
    policy = site(tmp_path, NOOP_FIRST)
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert "require_noop_first: invocation deploy runs only after a --noop" in done.stderr
    assert _out(tmp_path) == []
    # No option turns it off.
    for attempt in (["--force"], ["--yes"], ["--set", "require_noop_first=0"]):
        done = invoke(policy, "deploy", *attempt)
        assert done.returncode in (2, 3), attempt
        assert _out(tmp_path) == []


def test_a_noop_of_other_switches_does_not_count(tmp_path: Path) -> None:
    policy = site(tmp_path, NOOP_FIRST)
    noop = invoke(policy, "deploy", "--noop", "--set", "release=2")
    assert noop.returncode == 0, noop.stderr
    assert "3 resource(s) would change" in noop.stdout
    done = invoke(policy, "deploy", "--set", "release=3")
    assert done.returncode == 3
    assert _out(tmp_path) == []


def test_a_noop_stands_for_one_real_run_of_the_same_policy(tmp_path: Path) -> None:
    policy = site(tmp_path, NOOP_FIRST)
    assert invoke(policy, "deploy", "--noop", "--set", "release=2").returncode == 0
    done = invoke(policy, "deploy", "--set", "release=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _out(tmp_path) == ["base", "web-backup.conf", "web-main.conf"]
    again = invoke(policy, "deploy", "--set", "release=2")
    assert again.returncode == 3  # the noop was used
    # A noop, then the policy is edited: the noop no longer stands for what would run.
    assert invoke(policy, "deploy", "--noop", "--set", "release=2").returncode == 0
    policy.write_text(policy.read_text().replace("release={{ release }}", "r={{ release }}"))
    edited = invoke(policy, "deploy", "--set", "release=2")
    assert edited.returncode == 3
    assert (tmp_path / "out" / "web-main.conf").read_text() == "port=8080 release=2\n"


def test_a_noop_older_than_the_rail_does_not_count(tmp_path: Path) -> None:
    policy = site(tmp_path, NOOP_FIRST)
    assert invoke(policy, "deploy", "--noop").returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        with db:
            db.execute("UPDATE invocations SET started = started - 1801")
    finally:
        db.close()
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert "within 30m" in done.stderr
    assert _out(tmp_path) == []


def test_max_changes_counts_what_may_change_after_a_change(tmp_path: Path) -> None:
    """base and web-backup.conf would change; web-main.conf is right today but comes after
    base, so it may change: 3 predicted, over a limit of 2 that the 2 sure changes alone
    would meet. Nothing is applied."""
    out = tmp_path / "out"
    policy = site(tmp_path, "    guard: {max_changes: 2}\n")
    out.joinpath("web-main.conf").write_text("port=8080 release=1.0\n")
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert (
        "max_changes: the dry run predicts 2 change(s) and 1 more that may follow, over the 2"
        in done.stderr
    )
    assert _out(tmp_path) == ["web-main.conf"]


def test_max_changes_lets_a_small_enough_run_through(tmp_path: Path) -> None:
    policy = site(tmp_path, "    guard: {max_changes: 3}\n")
    done = invoke(policy, "deploy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _out(tmp_path) == ["base", "web-backup.conf", "web-main.conf"]


def test_allowed_classes_cannot_be_met_with_class(tmp_path: Path) -> None:
    policy = site(tmp_path, "    guard: {allowed_classes: [cvt_elsewhere]}\n")
    done = invoke(policy, "deploy", "--class", "cvt_elsewhere")
    assert done.returncode == 3
    assert "allowed_classes: invocation deploy runs only on a host of class cvt_elsewhere" in (
        done.stderr
    )
    assert _out(tmp_path) == []
    allowed = site(tmp_path, "    guard: {allowed_classes: [cvt_elsewhere, linux]}\n")
    assert invoke(allowed, "deploy").returncode == 0


def test_forbidden_classes_refuse_a_host_of_that_class(tmp_path: Path) -> None:
    policy = site(tmp_path, "    guard: {forbidden_classes: [linux]}\n")
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert "forbidden_classes: invocation deploy never runs on a host of class linux" in done.stderr
    by_flag = site(tmp_path, "    guard: {forbidden_classes: [prod]}\n")
    assert invoke(by_flag, "deploy", "--class", "prod").returncode == 3
    assert _out(tmp_path) == []


def test_confirm_refuses_when_stdin_is_not_a_terminal(tmp_path: Path) -> None:
    policy = site(tmp_path, "    guard: {confirm: true}\n")
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert "confirm: invocation deploy asks for its name typed on a terminal" in done.stderr
    piped = subprocess.run(
        [*_COMMAND, str(policy), "deploy", "--state-dir", str(tmp_path / "state")],
        input="deploy\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert piped.returncode == 3
    assert _out(tmp_path) == []
    assert invoke(policy, "deploy", "--noop").returncode == 0  # a noop never asks


def _typed(
    policy: Path, answer: str, at_prompt: Callable[[], None] | None = None
) -> tuple[int, str]:
    """Run ``invoke POLICY deploy`` on a pseudo-terminal; type ``answer`` at the prompt
    (after calling ``at_prompt``)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*_COMMAND, str(policy), "deploy", "--state-dir", str(policy.parent / "state")],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    assert proc.stderr is not None
    said = b""
    try:
        while b"Type deploy to apply: " not in said:
            ready = select.select([proc.stderr], [], [], TIMEOUT)[0]
            assert ready, f"no prompt: {said!r}"
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"no prompt: {said!r}"
            said += chunk
        assert b"3 resource(s) would change" in said
        if at_prompt is not None:
            at_prompt()
        os.write(master, answer.encode() + b"\n")
        code = proc.wait(TIMEOUT)
        said += proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return code, said.decode()


def test_confirm_applies_only_after_the_name_is_typed(tmp_path: Path) -> None:
    policy = site(tmp_path, "    guard: {confirm: true}\n")
    code, said = _typed(policy, "yes")
    assert code == 3, said
    assert "confirm: 'yes' is not 'deploy'" in said
    assert _out(tmp_path) == []
    code, said = _typed(policy, "deploy")
    assert code == 0, said
    assert _out(tmp_path) == ["base", "web-backup.conf", "web-main.conf"]


def test_a_noop_whose_checks_failed_does_not_count(tmp_path: Path) -> None:
    policy = site(tmp_path, NOOP_FIRST)
    # base is already right, so nothing upstream would change and the failure is not a
    # "may" of the dry run: the file's check fails, its path being a directory.
    (tmp_path / "out" / "base").write_text("base\n")
    (tmp_path / "out" / "web-main.conf").mkdir()
    noop = invoke(policy, "deploy", "--noop")
    assert noop.returncode == 1, noop.stdout + noop.stderr
    (tmp_path / "out" / "web-main.conf").rmdir()
    done = invoke(policy, "deploy")
    assert done.returncode == 3
    assert "require_noop_first" in done.stderr
    assert _out(tmp_path) == ["base"]


def test_a_policy_edited_at_the_confirmation_prompt_is_not_run(tmp_path: Path) -> None:
    """The prompt shows what the checked policy would do; an edit made while it waits
    (here, as soon as the prompt is printed) is refused, not run unchecked."""
    policy = site(tmp_path, "    guard: {confirm: true}\n")

    def edit() -> None:
        policy.write_text(policy.read_text().replace("port={{ port }}", "PORT={{ port }}"))

    code, said = _typed(policy, "deploy", at_prompt=edit)
    assert code == 3, said
    assert "changed while invocation deploy ran its checks" in said
    assert _out(tmp_path) == []


def test_a_real_run_killed_midway_used_its_noop(tmp_path: Path) -> None:
    """kill -9 while the run waits in a command (after its first change): the record says
    running, and the noop it stood on does not let a second run through."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "bundles:\n  job:\n    resources:\n"
        f'      - file: {tmp_path}/first\n        content: "1\\n"\n'
        f'      - exec: "wait-{{{{ name }}}}"\n        cmd: [cat, {fifo}]\n'
        f"        require: [file[{tmp_path}/first]]\n"
        "invocations:\n  go:\n    methods: [job]\n    guard: {require_noop_first: 30m}\n"
        "resources:\n  - job: a\n"
    )
    state = ["--state-dir", str(tmp_path / "state")]
    assert run("invoke", str(policy), "go", "--noop", *state).returncode == 0
    with Agent("invoke", str(policy), "go", *state) as agent:
        agent.wait_for_line(lambda line: line == f"file[{tmp_path}/first]: created")
        agent.send(signal.SIGKILL)
        assert agent.wait() == -signal.SIGKILL
    again = run("invoke", str(policy), "go", *state)
    assert again.returncode == 3
    assert "require_noop_first" in again.stderr
    listed = run("history", *state).stdout.splitlines()
    assert [line.split(" -> ")[1].split(" ")[0].rstrip(":") for line in listed] == [
        "ok",
        "running",
        "refused",
    ]
