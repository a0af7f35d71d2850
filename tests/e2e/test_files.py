"""The real ``convergent`` command writing files while it is killed or fed hostile paths:
a target is never torn, stale temp files are swept (only the agent's own), a FIFO source
never hangs a run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.agent import TIMEOUT, convergent
from tests.host.hostile import NOBODY, lab, needs_root
from tests.waits import Inotify

SIZE = 50 << 20
IN_MODIFY, IN_CLOSE_WRITE, IN_CREATE = 0x2, 0x8, 0x100


def _policy(tmp_path: Path, body: str) -> list[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"resources:\n{body}")
    return ["run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "convergent", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".convergent-" in p.name)


def _kill_on(proc: subprocess.Popen[bytes], events: Inotify, prefix: str, mask: int) -> None:
    """Kill the agent at the first event in ``mask`` of an entry starting with ``prefix``."""
    try:
        found = events.wait(
            lambda got, name: bool(got & mask) and name.startswith(prefix),
            time.monotonic() + TIMEOUT,
        )
        assert found is not None, f"no event for {prefix}* within {TIMEOUT} s"
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        events.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "event", [IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE], ids=["create", "modify", "close"]
)
def test_kill_during_50mb_write_never_tears_the_target(tmp_path: Path, event: int) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old, new = b"A" * SIZE, b"B" * SIZE
    target = work / "big"
    target.write_bytes(old)
    source = tmp_path / "source"
    source.write_bytes(new)
    args = _policy(tmp_path, f"  - file: {target}\n    source: {source}\n")
    events = Inotify(work, event)
    _kill_on(_start(args), events, ".big.convergent-", event)
    data = target.read_bytes()
    assert data in (old, new), f"torn: {len(data)} bytes"
    assert convergent(*args, timeout=120).returncode == 0
    assert target.read_bytes() == new
    assert _temps(work) == []


@needs_root
@pytest.mark.timeout(120)
@pytest.mark.parametrize("owner", ["root", "nobody"])
def test_stale_temp_files_of_a_killed_agent_are_removed(tmp_path: Path, owner: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = work / "conf"
    source = tmp_path / "source"
    source.write_bytes(b"C" * SIZE)
    args = _policy(tmp_path, f"  - file: {target}\n    source: {source}\n    owner: {owner}\n")
    # Killed once the first bytes are in: the temp file has its owner (and mark) by then.
    _kill_on(_start(args), Inotify(work, IN_MODIFY), ".conf.convergent-", IN_MODIFY)
    stale = _temps(work)
    assert len(stale) == 1  # what the killed agent left
    st = os.stat(work / stale[0])
    assert st.st_uid == (0 if owner == "root" else NOBODY)
    assert stat.S_IMODE(st.st_mode) in (0o600, 0o644)  # private, or final once all is in
    result = convergent(*args, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _temps(work) == []
    assert target.read_bytes() == source.read_bytes()


def _converge_x(tmp_path: Path, target: Path) -> None:
    """One run of a policy that says ``target`` holds "x\\n"; it succeeds."""
    result = convergent(*_policy(tmp_path, f'  - file: {target}\n    content: "x\\n"\n'))
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.read_text() == "x\n"


@needs_root
def test_lookalike_temp_of_another_user_is_kept(tmp_path: Path) -> None:
    shared = lab(tmp_path) / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "conf"
    lookalike = shared / ".conf.convergent-0123abcd1.tmp"
    lookalike.write_text("the user's own file\n")
    os.chown(lookalike, NOBODY, NOBODY)
    stale = shared / ".conf.convergent-89abcdef1.tmp"  # a killed root agent's
    stale.write_text("half")
    (shared / ".conf.convergent-fedcba981.tmp").symlink_to("/etc/passwd")  # not a file
    _converge_x(tmp_path, target)
    assert lookalike.read_text() == "the user's own file\n"
    assert not stale.exists()
    assert (shared / ".conf.convergent-fedcba981.tmp").is_symlink()


@needs_root
def test_a_temp_file_of_a_live_writer_is_not_swept(tmp_path: Path) -> None:
    """Two agents writing in one directory (hosts sharing a file system): one's sweep of
    killed runs' temp files must not take the other's, still being written. A temp name
    holds its writer's pid and PID namespace; a dead writer's is swept."""
    work = lab(tmp_path)
    target = work / "conf"
    namespace = os.stat("/proc/self/ns/pid").st_ino
    writer = subprocess.Popen(["sleep", "60"])
    try:
        live = work / f".conf.convergent-{writer.pid:x}.{namespace:x}.0badc0de1.tmp"
        live.write_text("being written")
        dead = subprocess.Popen(["true"])
        dead.wait()
        stale = work / f".conf.convergent-{dead.pid:x}.{namespace:x}.0badc0de1.tmp"
        stale.write_text("half")
        _converge_x(tmp_path, target)
        assert live.read_text() == "being written"
        assert not stale.exists()
    finally:
        writer.kill()
        writer.wait()
    target.unlink()  # the next run repairs the file, and sweeps its name's temp files
    _converge_x(tmp_path, target)
    assert _temps(work) == []


@pytest.mark.timeout(60)
def test_fifo_source_does_not_hang_a_one_shot_run(tmp_path: Path) -> None:
    source = tmp_path / "source"
    os.mkfifo(source)
    copy, other = tmp_path / "copy", tmp_path / "other"
    body = f'  - file: {copy}\n    source: {source}\n  - file: {other}\n    content: "ok\\n"\n'
    result = convergent(*_policy(tmp_path, body))
    assert result.returncode == 1
    assert f"source: {source} is a fifo, not a regular file" in result.stdout + result.stderr
    assert other.read_text() == "ok\n"
    assert not copy.exists()
