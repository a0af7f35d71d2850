"""`convergent completion SHELL`: scripts generated from the parser, run in real shells."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convergent

SRC = Path(convergent.__file__).resolve().parent.parent
BOUND = 60.0


def _script(shell: str, tmp_path: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "convergent", "completion", shell],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / f"convergent.{shell}"
    path.write_text(done.stdout)
    return path


def _shell(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


BASH_COMPLETE = """
source {script}
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=(); _convergent
      printf '%s\\n' "${{COMPREPLY[*]}}"; }}
t convergent ""
t convergent ru
t convergent run --s
t convergent graph --format ""
t convergent state ""
t convergent state reset --
t convergent doc fi
t convergent run po
t convergent run --state-dir st
t convergent service install --policy po
t convergent run po.yaml --sema ""
"""


def test_bash_completes_commands_options_choices_kinds_and_policy_files(tmp_path: Path) -> None:
    script = _script("bash", tmp_path)
    (tmp_path / "policy.yaml").write_text("resources: []\n")
    (tmp_path / "state").mkdir()
    out = _shell(["bash", "-c", BASH_COMPLETE.format(script=script)], tmp_path).splitlines()
    assert out[0].split()[:13] == [
        "run", "check", "graph", "state", "schema", "doc", "completion", "man", "service",
        "facts", "cluster", "report", "status",
    ]  # fmt: skip
    assert {"destroy", "invoke", "history"} <= set(out[0].split())
    assert out[1] == "run"
    assert out[2].split() == ["--sema", "--state-dir", "--seeds", "--set", "--set-secret"]
    assert out[3].split() == ["dot", "svg"]
    assert out[4].split() == ["check", "restore", "reset"]
    assert out[5].split() == ["--help", "--state-dir", "--yes"]
    assert out[6] == "file"
    assert out[7] == "policy.yaml"
    assert out[8] == "state"
    assert out[9] == "policy.yaml"
    assert out[10] == ""  # a number: nothing to offer


@pytest.mark.skipif(
    shutil.which("zsh") is None, reason="zsh is not installed (make test installs it)"
)
def test_zsh_script_parses_and_registers_the_completion(tmp_path: Path) -> None:
    script = _script("zsh", tmp_path)
    _shell(["zsh", "-n", str(script)], tmp_path)
    probe = (
        f"source {script}; print -r -- $_comps[convergent]; "
        'emulate sh -c \'setopt ksharrays; COMP_WORDS=(convergent state ""); COMP_CWORD=2; '
        "_convergent; echo ${COMPREPLY[@]}'"
    )
    out = _shell(["zsh", "-fc", probe], tmp_path).splitlines()
    assert out == ["_bash_complete -F _convergent", "check restore reset"]


@pytest.mark.skipif(
    shutil.which("fish") is None, reason="fish is not installed (make test installs it)"
)
def test_fish_script_parses_and_completes(tmp_path: Path) -> None:
    script = _script("fish", tmp_path)
    _shell(["fish", "--no-execute", str(script)], tmp_path)
    (tmp_path / "policy.yaml").write_text("resources: []\n")
    probe = (
        f"source {script}; complete -C 'convergent st'; echo ==; "
        "complete -C 'convergent state '; echo ==; complete -C 'convergent run po'"
    )
    out = _shell(["fish", "-c", probe], tmp_path).split("==\n")
    assert [line.split("\t")[0] for line in out[0].splitlines()] == ["state", "status"]
    assert sorted(line.split("\t")[0] for line in out[1].splitlines()) == [
        "check",
        "reset",
        "restore",
    ]
    assert out[2].splitlines() == ["policy.yaml"]


def test_completing_a_word_never_runs_convergent(tmp_path: Path) -> None:
    """The scripts are static: nothing calls the program back when a word is completed."""
    for shell in ("bash", "zsh", "fish"):
        lines = _script(shell, tmp_path).read_text().splitlines()
        text = "\n".join(line for line in lines if not line.startswith("#"))
        assert "$(convergent" not in text and "(convergent " not in text
        assert "ARGCOMPLETE" not in text


def test_the_new_commands_leave_version_and_a_plain_run_alone(tmp_path: Path) -> None:
    """`--version` builds no parser (the tool commands made it bigger); a plain run imports
    none of the tool modules, and neither does `--version`."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n  - noop: a\n")
    runs = (
        ["--version"],
        ["run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "st")],
    )
    for argv in runs:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "convergent", *argv],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
        tools = {"schema", "doc", "completion", "man", "service", "notify", "files"}
        assert not modules & {f"convergent.cli.{name}" for name in tools}
        assert "argparse" not in modules and "json" not in modules
