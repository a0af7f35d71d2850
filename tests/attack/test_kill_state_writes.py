"""kill -9 during the agent's own multi-step writes under the state directory (the
database's backup, a process's record) loses nothing, doubles nothing and leaves no
temp file behind once the next agent ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.killer import IN_CREATE, IN_MOVED_TO, KillOn


def _agent(state: Path, policy: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convergent",
            "run",
            "--converged-timeout",
            "0",
            "--state-dir",
            str(state),
            str(policy),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(state: Path, policy: Path) -> subprocess.CompletedProcess[str]:
    proc = _agent(state, policy)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _killed_on(directory: Path, name: str, nth: int, state: Path, policy: Path) -> None:
    killer = KillOn(directory, IN_CREATE, lambda n: n.endswith(name), nth)
    with killer:
        proc = _agent(state, policy)
        killer.start(proc.pid)
        proc.communicate(timeout=60)
    assert killer.fired.is_set(), f"no {name} was created: {killer.events}"
    assert proc.returncode == -signal.SIGKILL


def test_a_kill_during_the_state_backup_keeps_the_secrets_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    policy = tmp_path / "p.yaml"
    pw = tmp_path / "pw"
    policy.write_text(
        "resources:\n  - password: db\n    length: 32\n"
        f"  - file: {pw}\n    mode: '0600'\n    recv:\n      content: password[db].password\n"
    )
    first = _run(state, policy)
    assert first.returncode == 0, first.stderr
    secret = pw.read_bytes()
    # A start copies the database only when it changed since the backup: without one,
    # the next start makes it (the write the kill lands in).
    (state / "state.db.backup").unlink()
    _killed_on(state, ".state.db.backup.tmp", 1, state, policy)
    again = _run(state, policy)
    assert again.returncode == 0, again.stderr
    assert pw.read_bytes() == secret
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []


def _sleepers(tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd == f"sleep\0{tag}\0".encode():
                found.append(int(entry))
    return found


@pytest.mark.parametrize("nth", [1, 2])
def test_a_kill_while_a_process_record_is_written_never_starts_it_twice(
    tmp_path: Path, nth: int
) -> None:
    tag = f"{6000 + nth}.{os.getpid()}"
    state = tmp_path / "state"
    (state / "processes").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    policy = tmp_path / "p.yaml"
    policy.write_text(f"resources:\n  - process: nap\n    cmd: [sleep, '{tag}']\n")
    try:
        _killed_on(state / "processes", ".tmp", nth, state, policy)
        again = _run(state, policy)
        assert again.returncode == 0, again.stderr
        assert len(_sleepers(tag)) == 1, again.stdout
        if nth == 1:  # the next agent writes the record again, and sweeps
            leftovers = [p.name for p in (state / "processes").iterdir() if p.suffix == ".tmp"]
            assert leftovers == []
    finally:
        for pid in _sleepers(tag):
            os.kill(pid, signal.SIGKILL)


def test_a_kill_during_a_tree_copy_leaves_no_temp_file_after_the_next_run(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for i in range(200):
        (source / f"f{i}").write_bytes(os.urandom(2048))
    target = tmp_path / "target"
    target.mkdir()
    state = tmp_path / "state"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"resources:\n  - file: {target}\n    state: directory\n    source: {source}\n"
        "    recurse: true\n"
    )
    _killed_on(target, ".tmp", 50, state, policy)
    again = _run(state, policy)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in source.iterdir())
    for p in source.iterdir():
        assert (target / p.name).read_bytes() == p.read_bytes()


@pytest.mark.parametrize("nth", [1, 2])
def test_a_kill_while_line_and_cron_write_leaves_whole_files_and_no_temp(
    tmp_path: Path, nth: int
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "app.conf").write_text("a = 1\n")
    state = tmp_path / "state"
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"resources:\n  - line: {conf}/app.conf\n    text: 'b = 2'\n"
        f"  - cron: job\n    cron_dir: {conf}\n    cmd: 'true'\n    special: daily\n"
    )
    _killed_on(conf, ".tmp", nth, state, policy)
    for name in ("app.conf", "job"):
        if (conf / name).exists():
            assert (conf / name).read_text().endswith("\n")
    again = _run(state, policy)
    assert again.returncode == 0, again.stderr
    assert (conf / "app.conf").read_text() == "a = 1\nb = 2\n"
    assert "@daily root true" in (conf / "job").read_text()
    assert sorted(p.name for p in conf.iterdir()) == ["app.conf", "job"]


@pytest.mark.parametrize("kind", ["line", "cron", "tree"])
@pytest.mark.parametrize("moment", ["temp created", "renamed"])
def test_a_refresh_from_the_new_kinds_survives_a_kill_around_their_write(
    tmp_path: Path, kind: str, moment: str
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("a = 1\n")
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_text("tree\n")
    ran = tmp_path / "ran"
    resource = {
        "line": (f"line: {etc}/app.conf\n    text: 'b = 2'", f"line[{etc}/app.conf]", "app.conf"),
        "cron": (
            f"cron: job\n    cron_dir: {etc}\n    cmd: 'true'\n    special: daily",
            "cron[job]",
            "job",
        ),
        "tree": (
            f"file: {etc}/tree\n    state: directory\n    source: {source}\n    recurse: true",
            f"file[{etc}/tree]",
            "f",
        ),
    }[kind]
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"resources:\n  - {resource[0]}\n    notify: 'exec[after]'\n"
        f"  - exec: after\n    cmd: [sh, -c, 'echo x >> {ran}']\n    refresh_only: true\n"
    )
    state = tmp_path / "state"
    watched = etc / "tree" if kind == "tree" else etc
    if kind == "tree":
        watched.mkdir()
    mask = IN_CREATE if moment == "temp created" else IN_MOVED_TO
    name = ".tmp" if moment == "temp created" else resource[2]
    killer = KillOn(watched, mask, lambda n: n.endswith(name))
    with killer:
        proc = _agent(state, policy)
        killer.start(proc.pid)
        proc.communicate(timeout=60)
    assert killer.fired.is_set(), killer.events
    again = _run(state, policy)
    assert again.returncode == 0, again.stderr
    assert ran.exists(), again.stdout
