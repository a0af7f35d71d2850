"""The command line itself: arguments, usage errors, --version and its start-up cost."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from convergent import __version__
from convergent.cli.main import main
from convergent.state.statedir import default_state_dir, ensure_state_dir


def test_version_prints_the_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"convergent {__version__}\n"


def test_version_imports_neither_engine_nor_asyncio() -> None:
    code = (
        "import sys\n"
        "from convergent.cli.main import main\n"
        "main(['--version'])\n"
        "heavy = [m for m in ('asyncio', 'msgspec', 'yaml', 'convergent.engine',"
        " 'convergent.policy', 'convergent.resources', 'convergent.graph') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.splitlines() == [f"convergent {__version__}", "[]"]


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: convergent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run"], "the following arguments are required: FILE"),
        (["run", "p.yaml", "--converged-timeout", "-1"], "give 0 or more seconds"),
        (["run", "p.yaml", "--converged-timeout", "soon"], "'soon' is not a number of seconds"),
        (["run", "p.yaml", "--converged-timeout", "nan"], "give 0 or more seconds"),
        (["run", "p.yaml", "--bogus"], "unrecognized arguments: --bogus"),
        (["graph", "p.yaml", "--format", "png"], "invalid choice: 'png'"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: convergent" in err


@pytest.mark.parametrize("command", ["run", "check", "graph"])
def test_missing_policy_file_is_named_and_exits_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    argv = [command, str(missing)]
    if command == "run":
        argv += ["--state-dir", str(tmp_path / "state")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err
    assert not (tmp_path / "state").exists()


def test_default_state_dir_is_var_lib_for_root() -> None:
    assert default_state_dir(0, {"XDG_STATE_HOME": "/x", "HOME": "/root"}) == "/var/lib/convergent"


def test_default_state_dir_follows_xdg_for_users() -> None:
    env = {"XDG_STATE_HOME": "/home/u/st", "HOME": "/home/u"}
    assert default_state_dir(1000, env) == "/home/u/st/convergent"
    assert default_state_dir(1000, {"HOME": "/home/u"}) == "/home/u/.local/state/convergent"
    relative = {"XDG_STATE_HOME": "st", "HOME": "/home/u"}
    assert default_state_dir(1000, relative) == "/home/u/.local/state/convergent"


def test_state_dir_is_created_mode_0700_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "convergent"
    old = os.umask(0o002)
    try:
        ensure_state_dir(str(target))
    finally:
        os.umask(old)
    assert target.is_dir()
    assert target.stat().st_mode & 0o777 == 0o700


def test_state_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.write_text("")
    with pytest.raises(NotADirectoryError):
        ensure_state_dir(str(target))


def test_the_command_exits_with_flushed_output_atexit_handlers_and_threads_done() -> None:
    """``entry`` skips the interpreter's teardown, never what an orderly exit promises.

    The thread is still blocked when the command has finished (its usage error is on
    stderr); it is released only then, and what it and the atexit handler write after
    that still arrives, with the command's exit code.
    """
    code = (
        "import atexit, sys, threading\n"
        "from convergent.cli.main import entry\n"
        "def late():\n"
        "    sys.stdin.readline()\n"
        "    sys.stdout.write('thread finished\\n')\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
        "sys.argv = ['convergent', 'frobnicate']\n"
        "entry()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        err = b""
        while b"invalid choice" not in err:  # read unbuffered: select sees what is left
            ready, _, _ = select.select([proc.stderr], [], [], 30)
            assert ready, f"no usage error within 30 s: {err!r}"
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"stderr closed: {err!r}"
            err += chunk
        out, _ = proc.communicate("go\n", timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 2
    assert out.splitlines() == ["thread finished", "atexit ran"]
