"""A plain ``run`` command line is read without argparse, exactly as argparse reads it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.cli.main import RUN_OPTIONS, build_parser, plain_run

PLAIN = [
    ["run", "p.yaml"],
    ["run", "p.yaml", "--converged-timeout", "0"],
    ["run", "--converged-timeout=2.5", "p.yaml", "--noop"],
    ["run", "--noop", "--state-dir", "/tmp/s", "p.yaml", "--sema", "3"],
    ["run", "p.yaml", "--state-dir=", "--converged-timeout", " 1 "],
    ["run", "run"],
    ["run", "", "--state-dir", "a=b"],
    ["run", "a.yaml", "b.yaml"],
    ["run", "--noop", "a.yaml", "b.yaml", "c.yaml", "--identity", "k", "--converged-timeout", "0"],
    ["run", "p.yaml", "--remote", "ssh://root@h1", "--remote=ssh://root@h2#b", "--cconns", "2"],
    ["run", "p.yaml", "--remote", "ssh://root@h1"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_plain_run_reads_what_argparse_reads(argv: list[str]) -> None:
    fast = plain_run(argv)
    assert fast is not None
    assert vars(fast) == vars(build_parser().parse_args(argv))


NOT_PLAIN = [
    [],
    ["check", "p.yaml"],
    ["--version"],
    ["run"],
    ["run", "--help"],
    ["run", "p.yaml", "-h"],
    ["run", "a.yaml", "--noop", "b.yaml"],  # argparse refuses b.yaml
    ["run", "p.yaml", "--conv", "0"],  # an abbreviation: argparse's business
    ["run", "p.yaml", "--noop", "--noop"],
    ["run", "p.yaml", "--noop=yes"],
    ["run", "p.yaml", "--converged-timeout"],
    ["run", "p.yaml", "--converged-timeout", "-1"],
    ["run", "p.yaml", "--converged-timeout", "soon"],
    ["run", "p.yaml", "--sema", "0"],
    ["run", "--", "p.yaml"],
    ["run", "-", "p.yaml"],
    ["run", "p.yaml", "--unknown"],
]


@pytest.mark.parametrize("argv", NOT_PLAIN)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert plain_run(argv) is None


def _run_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    run: argparse.ArgumentParser = commands.choices["run"]
    return run


def test_run_options_table_matches_the_parser() -> None:
    declared = {  # a flag has no type; a value without a type is a str
        option: (action.dest, None if action.nargs == 0 else action.type or str)
        for action in _run_parser()._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }
    assert declared == RUN_OPTIONS  # a new run option must be added to RUN_OPTIONS too


def test_a_plain_run_never_imports_argparse(tmp_path: Path) -> None:
    made = tmp_path / "made"
    policy = tmp_path / "p.yaml"
    policy.write_text(f'resources:\n  - file: {made}\n    content: "x\\n"\n', encoding="utf-8")
    code = (
        "import sys\n"
        "from convergent.cli.main import main\n"
        f"code = main(['run', {str(policy)!r}, '--converged-timeout', '0',"
        f" '--state-dir', {str(tmp_path / 'state')!r}])\n"
        "assert code == 0, code\n"
        "assert 'argparse' not in sys.modules, 'argparse was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert made.read_text() == "x\n"  # the run really converged the policy
