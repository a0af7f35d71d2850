"""convergent.pyz runs where convergent is not installed: the system's python3 in
isolated mode (``-I``: no PYTHONPATH, no user site), from an empty directory, in a bare
environment; and a Python that cannot run it is told what the file needs.

The file is built in the test session from this checkout (tests/dist_support.py).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from convergent.remote import dist
from convergent.remote.dist_boot import abi_tag, describe_abi
from convergent.remote.dist_files import version
from tests.dist import pyz as P
from tests.dist_support import built_pyz
from tests.e2e.agent import EXAMPLES
from tests.waits import keepers_of, until_written

HELLO_PREFIX = "/tmp/convergent-hello"


def _empty(tmp_path: Path) -> Path:
    where = tmp_path / "empty"
    where.mkdir()
    return where


def _run_once(
    pyz: Path, policy: Path, tmp_path: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``convergent.pyz run POLICY --converged-timeout 0`` with the test's state and cache
    directories."""
    state = str(tmp_path / "state")
    return P.run(
        pyz,
        "run",
        str(policy),
        "--state-dir",
        state,
        "--converged-timeout",
        "0",
        cwd=cwd,
        cache=tmp_path / "cache",
    )


@P.needs_system_python
@pytest.mark.timeout(300)
def test_a_process_started_from_the_file_has_its_log_kept(tmp_path: Path) -> None:
    """The log's keeper is started from the single file too (its module imported from
    the zip by the system Python), and writes what the process prints."""
    pyz = built_pyz()
    cwd = _empty(tmp_path)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "resources:\n  - process: talker\n"
        "    cmd: [sh, -c, 'echo from the single file; exec sleep 300']\n",
        encoding="utf-8",
    )
    done = _run_once(pyz, policy, tmp_path, cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"started \(pid (\d+); output to (\S+)\)", done.stdout)
    assert found, done.stdout
    pid, log = int(found.group(1)), Path(found.group(2))
    try:
        until_written(
            log, lambda: log.read_bytes() == b"from the single file\n", P.TIMEOUT, "its line"
        )
        assert len(keepers_of(log)) == 1
    finally:
        os.killpg(pid, signal.SIGKILL)


@P.needs_system_python
@pytest.mark.timeout(300)
def test_the_file_converges_hello_with_only_the_system_python(tmp_path: Path) -> None:
    pyz = built_pyz()
    cwd = _empty(tmp_path)
    nothing = subprocess.run(
        [P.SYSTEM_PYTHON, "-I", "-c", "import convergent"],
        cwd=cwd,
        env=P.bare_env(tmp_path / "cache", cwd),
        capture_output=True,
        text=True,
        timeout=P.TIMEOUT,
        check=False,
    )
    assert nothing.returncode == 1 and "No module named 'convergent'" in nothing.stderr
    root = tmp_path / "hello"
    policy = tmp_path / "hello.yaml"
    text = (EXAMPLES / "hello.yaml").read_text(encoding="utf-8")
    assert HELLO_PREFIX in text
    policy.write_text(text.replace(HELLO_PREFIX, str(root)), encoding="utf-8")

    done = _run_once(pyz, policy, tmp_path, cwd)

    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "f1").read_text() == "i am f1\n"
    assert (root / "f2").read_text() == "i am f2\n"
    assert stat.S_IMODE((root / "f2").stat().st_mode) == 0o600
    assert (root / "built").read_text() == "i am f1\ni am f2\n"
    assert f"file[{root}/f1]: created" in done.stdout
    assert "noop[done]: notified by exec[build]" in done.stdout
    assert os.listdir(cwd) == []  # nothing written where it ran


@P.needs_system_python
@pytest.mark.timeout(300)
def test_the_file_says_its_version(tmp_path: Path) -> None:
    done = P.run(built_pyz(), "--version", cwd=_empty(tmp_path), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"convergent {version()}\n"


@P.needs_system_python
@pytest.mark.timeout(300)
def test_a_python_of_another_abi_is_told_what_the_file_needs(tmp_path: Path) -> None:
    """Simulated: a copy of the file whose manifest says its compiled modules are for
    ``cpython-399-...`` (a file built by a Python 3.99), run by the system's python3."""
    tag = abi_tag()
    other = tag.replace("cpython-311", "cpython-399").replace(tag.split("-")[1], "399")
    wrong = P.rewrite(built_pyz(), tmp_path / "other.pyz", lambda t: t.replace(tag, other))
    done = P.run(wrong, "--version", cwd=_empty(tmp_path), cache=tmp_path / "cache")
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr
    assert message.startswith("other.pyz: this file carries compiled modules")
    assert describe_abi(other) in message and other in message  # what it needs
    assert P.SYSTEM_PYTHON in message and tag in message  # what this python is
    assert "make dist" in message  # how to fix
    assert not (tmp_path / "cache").exists()  # refused before anything was written


def _other_pythons() -> list[str]:
    """Interpreters on this machine that are not of the build's ABI: another minor
    version on PATH, or pyenv's."""
    found = {shutil.which(f"python3.{minor}") for minor in range(6, 16)} | {shutil.which("python2")}
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found |= set(glob.glob(f"{root}/versions/*/bin/python"))
    return sorted(p for p in found if p and abi_of_cached(p) not in ("", abi_tag()))


_ABIS: dict[str, str] = {}


def abi_of_cached(python: str) -> str:
    if python not in _ABIS:
        _ABIS[python] = P.abi_of(python)
    return _ABIS[python]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("python", _other_pythons() or [None])
def test_a_real_python_that_cannot_run_the_file_says_why(tmp_path: Path, python: str) -> None:
    """Every interpreter on this machine of another ABI (too old: Python 2.7 to 3.10;
    newer: 3.12, 3.13): exit 2 and a message naming what the file needs."""
    if python is None:
        pytest.skip("no Python of another ABI on this machine")
    done = P.run(
        built_pyz(), "--version", cwd=_empty(tmp_path), cache=tmp_path / "cache", python=python
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    old = re.search(r"Python (\d+)\.(\d+)\.\d+", done.stderr)  # this one's: 3 parts
    assert old is not None, done.stderr
    if (int(old.group(1)), int(old.group(2))) < (3, 11):
        assert "convergent.pyz: needs Python 3.11 or newer" in done.stderr
    else:
        assert "convergent.pyz: this file carries compiled modules" in done.stderr
    assert describe_abi(abi_tag()) in done.stderr
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_without_a_path_is_cached_and_the_same_sources_give_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_CACHE_DIR", str(tmp_path / "cache"))
    first = dist.build()
    assert first.parent == tmp_path / "cache" / "build"
    before = first.stat()
    monkeypatch.setattr(dist, "_memo", {})
    again = dist.build()
    assert again == first
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stat.S_IMODE(before.st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "cache" / "build").stat().st_mode) == 0o700
    assert dist.digest(first) == dist.digest(built_pyz())  # deterministic
