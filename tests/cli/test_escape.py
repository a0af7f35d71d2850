"""A policy cannot forge a report line or reach the terminal raw through what it names.

Names with a newline and an ANSI escape, and a command that prints both, go through the
real ``convergent run`` and ``convergent check``: every line at the left margin is one
convergent wrote for a report or an error, and no control byte but the newline that ends
a line reaches stdout or stderr.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from convergent.engine.report import Blocked, Changed, Failed, Log, WouldChange
from convergent.errors import ResourceError
from convergent.render import TextRenderer, escape, say
from convergent.resources.base import Change

FORGED = "file[/etc/passwd]: removed"
CONTROL = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]")  # anything but the newline


def _cli(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "convergent", *argv], capture_output=True, timeout=60
    )


def _assert_clean(stream: bytes, margin: tuple[str, ...]) -> list[str]:
    assert not CONTROL.search(stream), stream
    lines = stream.decode().splitlines()
    for line in lines:
        if not line.startswith(" "):
            assert line.startswith(margin), f"a line nobody reported: {line!r}"
    return lines


def test_names_and_output_with_newlines_and_escapes_forge_no_line(tmp_path: Path) -> None:
    target = f"{tmp_path}/a\\nfile[/etc/passwd]: removed"  # YAML's \n: a real newline
    os.makedirs(f"{tmp_path}/a\nfile[/etc")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f'  - file: "{target}"\n'
        '    content: "x\\n"\n'
        '  - exec: "\\e[31mred\\nfile[/etc/shadow]: removed"\n'
        "    cmd: [sh, -c, \"printf 'out\\\\nfile[/etc/group]: removed\\\\n"
        "\\\\033[31mred\\\\r\\\\n'; exit 3\"]\n"
        f'    require: ["file[{target}]"]\n'
    )
    done = _cli("run", str(policy), "--converged-timeout", "0", "--state-dir", f"{tmp_path}/s")
    assert done.returncode == 1
    file_id = f"file[{tmp_path}/a\\nfile[/etc/passwd]: removed]"
    exec_id = "exec[\\x1b[31mred\\nfile[/etc/shadow]: removed]"
    out = _assert_clean(done.stdout, (file_id, exec_id, "resources: "))
    err = _assert_clean(done.stderr, (exec_id,))
    assert f"{file_id}: created" in out
    assert f"{exec_id}: stdout: file[/etc/group]: removed" in out
    assert f"{exec_id}: stdout: \\x1b[31mred\\r" in out
    assert err == [f"{exec_id}: FAILED: exited with code 3 (nothing on stderr)"]


def test_a_policy_error_naming_a_hostile_reference_forges_no_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        '  - noop: "x\\e[2J"\n'
        '    require: ["noop[gone\\nfile[/etc/passwd]: removed]"]\n'
    )
    done = _cli("check", str(policy))
    assert done.returncode == 2
    err = _assert_clean(done.stderr, (f"{policy}:3:",))
    assert err[0].startswith(f"{policy}:3:15: noop[x\\x1b[2J]: require: no resource noop[gone")
    assert _assert_clean(done.stdout, ()) == []


def test_every_report_is_escaped_by_the_default_reporter() -> None:
    out, err = io.StringIO(), io.StringIO()
    render = TextRenderer(out, err)
    evil = "file[/x\nfile[/etc/passwd]: removed\x1b[31m]"
    render(Changed.of(evil, "created\r" + FORGED, Change("created"), 0.0))
    render(WouldChange(evil, Change("content", "+a\x1b[2J\n" + FORGED + "\n"), (evil,)))
    render(Failed.of(evil, ResourceError(evil, "boom\n" + FORGED + "\x07")))
    render(Blocked(evil, evil))
    render(Log(evil, "stdout: \x1b]0;title\x07\u202eevil"))
    for text in (out.getvalue(), err.getvalue()):
        assert not CONTROL.search(text.encode())
        assert "\u202e" not in text
        for line in text.splitlines():
            assert line.startswith((" ", "file[/x\\nfile[/etc/passwd]: removed\\x1b[31m]"))


def test_escape_shows_control_characters_and_keeps_the_rest() -> None:
    assert escape("plain: kind[name] ü €") == "plain: kind[name] ü €"
    assert escape("a\nb\r\x1b[31m\x00\x7f\x85\u2028\u202e\tz") == (
        "a\\nb\\r\\x1b[31m\\x00\\x7f\\x85\\u2028\\u202e\tz"
    )


def test_say_escapes_and_indents_later_lines() -> None:
    stream = io.StringIO()
    say(f"convergent: first\x1b[0m\n{FORGED}\n", stream)
    assert stream.getvalue() == f"convergent: first\\x1b[0m\n    {FORGED}\n"
