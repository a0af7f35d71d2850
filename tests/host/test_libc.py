"""The C library calls bound through ``_ctypes`` (host/libc.py) behave as ctypes' own:
results, ``errno``, a missing function refused, and a run that makes them never loads
the ``ctypes`` package (~1 ms at the start)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convergent.host import libc


def test_a_bound_function_returns_what_the_c_library_returns() -> None:
    getppid = libc.function("getppid", libc.c_int)
    assert getppid() == os.getppid()


def test_a_failed_call_leaves_its_errno_for_get_errno() -> None:
    rm_watch = libc.function("inotify_rm_watch", libc.c_int, libc.c_int, libc.c_int)
    assert rm_watch(-1, 1) == -1
    assert libc.get_errno() == errno.EBADF


def test_a_string_argument_reaches_the_call_as_a_c_string(tmp_path: Path) -> None:
    access = libc.function("access", libc.c_int, libc.c_char_p, libc.c_int)
    (tmp_path / "here").write_text("")
    assert access(os.fsencode(tmp_path / "here"), os.F_OK) == 0
    assert access(os.fsencode(tmp_path / "missing"), os.F_OK) == -1
    assert libc.get_errno() == errno.ENOENT


def test_a_function_the_c_library_lacks_is_refused_by_name() -> None:
    with pytest.raises(AttributeError, match="no_such_function_here"):
        libc.function("no_such_function_here", libc.c_int)


def test_a_missing_function_is_refused_without_asking_another_library() -> None:
    """The loader's own refusal, at once: no ``ctypes`` package, no ``ldconfig`` run
    (``find_library``) for a C library the process already has."""
    code = textwrap.dedent(
        """
        import sys
        from convergent.host import libc
        try:
            libc.function("no_such_function_here", libc.c_int)
        except AttributeError as exc:
            print("refused:", exc)
        print("ctypes loaded:", "ctypes" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "no_such_function_here" in done.stdout, done.stdout
    assert done.stdout.splitlines()[-1] == "ctypes loaded: False", done.stdout


def test_the_ctypes_package_binding_gives_the_same_answers() -> None:
    """The fallback (another Python, or a statically linked one) through ``ctypes``."""
    getppid = libc._from_package("getppid", libc.c_int, ())
    assert getppid() == os.getppid()


# A run of a watched file and a command, in a process started like the command.
CHILD = textwrap.dedent(
    """
    import sys
    from convergent.cli.lazystd import import_runtime
    from convergent.cli.main import main

    policy, state = sys.argv[1:3]
    import_runtime()
    code = main(["run", policy, "--converged-timeout", "0", "--state-dir", state])
    assert code == 0, code
    from convergent.host import forked, fs
    from convergent.resources import fswatch
    print("bound:", forked._prctl.cache_info().currsize, fs._openat2_works())
    print("ctypes loaded:", "ctypes" in sys.modules)
    """
)


def test_a_run_makes_its_c_calls_without_the_ctypes_package(tmp_path: Path) -> None:
    """A command forked with its death signal (``prctl``: a user switch, here to root
    itself), a file in a watched directory (``inotify_*``) and a directory found again
    (``openat2``): none loads ``ctypes``."""
    if os.geteuid() != 0:
        pytest.skip("the command's user switch needs root")
    target = tmp_path / "files"
    target.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "resources:\n"
        f'  - file: "{target}/f1"\n    content: "one\\n"\n'
        f'  - file: "{target}/f2"\n    content: "two\\n"\n'
        f'  - exec: touch\n    cmd: [/bin/sh, -c, "echo ran > {target}/ran"]\n'
        "    user: root\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(policy), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "bound: 1 True" in done.stdout, done.stdout
    assert done.stdout.splitlines()[-1] == "ctypes loaded: False", done.stdout
    assert (target / "f2").read_text() == "two\n"
    assert (target / "ran").read_text() == "ran\n"


def test_syncfs_says_which_error_the_c_library_gave(tmp_path: Path) -> None:
    """The run's group commit syncs each file system once (``host/commits.py``): a sync
    that fails raises the C library's errno, and one that works returns."""
    from convergent.host.commits import _syncfs

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        _syncfs(fd)  # closed now
    assert raised.value.errno == errno.EBADF
