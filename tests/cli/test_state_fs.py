"""A full or read-only file system under the state directory: a clear error and exit code 2,
never a traceback, and nothing lost once it is writable again. The test mounts a small
tmpfs or a read-only bind mount (skipped where mounting is not permitted)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import convergent


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")


def _umount(where: Path) -> None:
    done = subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@contextlib.contextmanager
def small_tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    _mount("-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        _umount(where)


@contextlib.contextmanager
def read_only(where: Path) -> Iterator[Path]:
    """``where`` (an existing directory) seen through a read-only bind mount of itself."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    _mount("--bind", str(where), str(where))
    try:
        _mount("-o", "remount,bind,ro", str(where))
        yield where
    finally:
        _umount(where)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"\0" * 65536
        while chunk:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


def _policy(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "db.conf"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            resources:
              - password: db
              - file: {target}
                recv:
                  content: password[db].password
            """
        ),
        encoding="utf-8",
    )
    return policy, target


def _run(policy: Path, state: Path, *extra: str) -> tuple[int, str, str]:
    done = convergent(
        "run", str(policy), "--state-dir", str(state), "--converged-timeout", "0", *extra
    )
    return done.returncode, done.stdout, done.stderr


def test_a_full_state_file_system_is_a_clear_error(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path)
    with small_tmpfs(tmp_path / "fs") as fs:
        state = fs / "state"
        assert _run(policy, state)[0] == 0
        secret = target.read_text()
        filler = _fill(fs)
        try:
            code, out, err = _run(policy, state)
            assert code == 2, (out, err)
            assert "Traceback" not in err
            assert f"{state}/" in err
            assert f"state file {state}/lock: cannot write the lock file: No space left" in err
            assert "(the file system is full: free some space)" in err
            code, out, err = _run(policy, state, "--noop")  # SQLite cannot write its -shm
            assert code == 2, (out, err)
            assert "Traceback" not in err
            assert f"state database {state}/state.db: " in err
            assert "(the file system is full: free some space)" in err
            fresh = fs / "fresh"
            code, out, err = _run(policy, fresh)
            assert code == 2, (out, err)
            assert "Traceback" not in err
            assert f"{fresh}/" in err and "the file system is full" in err
        finally:
            filler.unlink()
        code, out, err = _run(policy, state)  # space again: nothing was lost
        assert code == 0, err
        assert target.read_text() == secret
        assert "password[db]" not in out


def test_a_read_only_state_file_system_is_a_clear_error(tmp_path: Path) -> None:
    policy, target = _policy(tmp_path)
    state = tmp_path / "state"
    assert _run(policy, state)[0] == 0
    secret = target.read_text()
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    with read_only(state):
        code, out, err = _run(policy, state)
        assert code == 2, (out, err)
        assert "Traceback" not in err
        assert f"state file {state}/lock: cannot open the lock file: Read-only file" in err
        assert "remount it read-write" in err
        target.write_text("drifted\n")
        code, out, err = _run(policy, state, "--noop")  # reading needs no write
        assert code == 0, err
        assert f"file[{target}]: would change" in out
        check = convergent("state", "check", "--state-dir", str(state))
        assert check.returncode == 0, check.stderr
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before
    code, out, err = _run(policy, state)
    assert code == 0, err
    assert target.read_text() == secret
