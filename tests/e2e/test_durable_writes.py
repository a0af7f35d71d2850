"""A change convergent reports is on disk: the file's bytes are synced before its name is
renamed into place, the name is synced (its directory) before the report, and a
``kill -9`` at the moment of a report loses nothing reported and tears nothing. The
syncs are paid once per batch (bench/writes.py, docs/performance.md)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import TIMEOUT, Agent, convergent

COUNT = 600  # several batches of commits.COMMIT_BATCH (256)


def _policy(tmp_path: Path, target: Path) -> list[str]:
    lines = ["resources:"]
    for i in range(COUNT):
        lines += [f"  - file: {target}/f{i:04d}", f'    content: "i am f{i:04d}\\n"']
    policy = tmp_path / "policy.yaml"
    policy.write_text("\n".join(lines) + "\n")
    return ["run", str(policy), "--state-dir", str(tmp_path / "state"), "--converged-timeout", "0"]


def _content(name: str) -> bytes:
    return f"i am {name}\n".encode()


_REPORT = re.compile(r"^file\[(?P<path>[^\]]+)\]: created$")


def test_a_change_reported_before_kill_9_is_whole_and_nothing_is_torn(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    args = _policy(tmp_path, target)
    with Agent(*args) as agent:
        agent.wait_for_line(lambda line: _REPORT.match(line) is not None, timeout=TIMEOUT)
        agent.send(signal.SIGKILL)  # the moment the first change is reported
        assert agent.wait(timeout=TIMEOUT) == -signal.SIGKILL
        reported = [m["path"] for line in agent.out if (m := _REPORT.match(line))]
    assert reported
    for path in reported:  # every change reported before the kill is there, whole
        assert Path(path).read_bytes() == _content(Path(path).name)
    for entry in target.iterdir():  # a managed name holds the old (none) or the whole new
        if not entry.name.startswith("."):
            assert entry.read_bytes() == _content(entry.name)
    again = convergent(*args)
    assert again.returncode == 0, again.stderr
    names = sorted(p.name for p in target.iterdir())
    assert names == [f"f{i:04d}" for i in range(COUNT)]  # the killed run's temps are swept


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_data_then_name_are_synced_before_a_change_is_reported(tmp_path: Path) -> None:
    """strace shows the order of the system calls: for each reported file, its temp file
    is created, then a sync of its data (``syncfs`` of the file system, or an fsync of
    the file), then the rename, then an fsync of its directory, then the report. The
    syncs run in their own thread: each call counts where it returned."""
    target = tmp_path / "t"
    target.mkdir()
    log = tmp_path / "strace.log"
    calls = "openat,syncfs,fsync,fdatasync,renameat,renameat2,write"
    argv = [sys.executable, "-m", "convergent", *_policy(tmp_path, target)]
    traced = ["strace", "-f", "-qq", "-s", "300", "-e", f"trace={calls}", "-o", str(log), *argv]
    result = subprocess.run(traced, capture_output=True, text=True, timeout=TIMEOUT * 2)
    if result.returncode != 0 and "ptrace" in result.stderr:
        pytest.skip(f"strace cannot trace here: {result.stderr[-200:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = list(_whole_calls(log.read_text().splitlines()))
    created: dict[str, tuple[int, str]] = {}  # temp name -> (index of its creation, fd)
    renamed: dict[str, tuple[int, str]] = {}  # final name -> (index, temp name)
    data_syncs: list[tuple[int, str]] = []  # (index, fd synced; "" for syncfs)
    dir_fds: set[str] = set()  # descriptors open on a directory
    dir_syncs: list[int] = []
    reports: dict[str, int] = {}
    temp = r'"(\.f\d+\.convergent-[0-9a-f.]+\.tmp)"'
    for n, line in enumerate(lines):
        if m := re.search(rf"openat\(\d+, {temp}, O_WRONLY.*= (\d+)$", line):
            created[m[1]] = (n, m[2])
        elif m := re.search(r'openat\(\d+, "\.", O_RDONLY[^)]*O_DIRECTORY\) += (\d+)$', line):
            dir_fds.add(m[1])
        elif re.search(r"syncfs\(\d+\)\s+= 0", line):
            data_syncs.append((n, ""))
        elif m := re.search(r"f(?:data)?sync\((\d+)\)\s+= 0", line):
            if m[1] in dir_fds:
                dir_fds.discard(m[1])
                dir_syncs.append(n)
            else:
                data_syncs.append((n, m[1]))
        elif m := re.search(rf"renameat2?\(\d+, {temp}, \d+, \"(f\d+)\"", line):
            renamed[m[2]] = (n, m[1])
        elif m := re.search(r'write\(1, "file\[[^\]]*/(f\d+)\]: created', line):
            reports[m[1]] = n
    assert len(reports) == COUNT, result.stdout[-2000:]
    used: set[int] = set()
    for name, reported_at in reports.items():
        renamed_at, temp_name = renamed[name]
        made_at, fd = created[temp_name]
        synced = [s for s, of in data_syncs if made_at < s < renamed_at and of in ("", fd)]
        assert synced, f"{name}: its data was not synced before the rename"
        named = [s for s in dir_syncs if renamed_at < s < reported_at]
        assert named, f"{name}: its directory was not synced before the report"
        used.update([synced[-1], named[0]])
    assert len(used) < COUNT // 4, f"{len(used)} syncs for {COUNT} files: not one per batch"


def _whole_calls(lines: list[str]) -> Iterator[str]:
    """strace -f lines, a call split by another thread's (``<unfinished ...>``, then
    ``<... NAME resumed>``) put together where it returned."""
    started: dict[str, str] = {}
    for line in lines:
        pid, _, call = line.partition(" ")
        if call.endswith("<unfinished ...>"):
            started[pid] = call.removesuffix("<unfinished ...>").strip()
        elif m := re.match(r"\s*<\.\.\. \w+ resumed>(.*)$", call):
            yield f"{pid} {started.pop(pid, '')}{m[1]}"
        else:
            yield line
