"""``pkg`` with real apt and dpkg: one transaction per group, drift repaired by a running
agent, removal, pinned versions, unknown packages, noop, a held lock.

These tests change the machine's packages (small ones: sl, cowsay, hello, fortune-mod)
and put it back as they found it (``restored``). They need root and package lists that
know those packages; CI runs as root with apt. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from convergent.resources.pkg_apt import Apt, PackageError
from tests.e2e.agent import Agent, convergent
from tests.resources.pkg_support import (
    BOUND,
    History,
    apt_ready,
    candidate,
    dpkg_status,
    hand,
    installed,
    policy,
    restored,
)

pytestmark = [
    pytest.mark.skipif(apt_ready() is not None, reason=apt_ready() or ""),
    pytest.mark.timeout(BOUND * 2),
    pytest.mark.slow,
]
__all__ = ["restored"]  # the fixture, imported to be used here


def run(tmp_path: Path, *entries: str, noop: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["run", str(policy(tmp_path / "p.yaml", entries)), "--converged-timeout", "0"]
    args += ["--state-dir", str(tmp_path / "state")]
    if noop:
        args.append("--noop")
    return convergent(*args, timeout=BOUND)


def test_three_packages_are_one_apt_transaction_and_the_report_names_each(
    tmp_path: Path, restored: History
) -> None:
    hand("remove", "sl", "cowsay", "hello")
    versions = {name: candidate(name) for name in ("sl", "cowsay", "hello")}
    done = run(tmp_path, "pkg: sl", "pkg: cowsay", "pkg: hello")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = restored.commandlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("apt-get install ")
    assert set(lines[0].split()[-3:]) == {"sl", "cowsay", "hello"}
    for name, version in versions.items():
        assert f"pkg[{name}]: installed {version}" in done.stdout.splitlines()
    assert installed("sl", "cowsay", "hello") == versions


def test_an_installed_group_is_checked_without_running_apt(
    tmp_path: Path, restored: History
) -> None:
    run(tmp_path, "pkg: sl", "pkg: hello")
    after = History()
    done = run(tmp_path, "pkg: sl", "pkg: hello")
    assert done.returncode == 0
    assert "repaired: 0" in done.stdout
    assert after.commandlines() == []


def test_noop_installs_nothing_and_says_what_it_would_install(
    tmp_path: Path, restored: History
) -> None:
    hand("remove", "sl", "hello")
    status = dpkg_status()
    done = run(tmp_path, "pkg: sl", "pkg: hello", noop=True)
    assert done.returncode == 0, done.stderr
    assert f"pkg[sl]: would change: install {candidate('sl')}" in done.stdout.splitlines()
    assert f"pkg[hello]: would change: install {candidate('hello')}" in done.stdout.splitlines()
    assert dpkg_status() == status
    assert restored.commandlines() == []


def test_absent_removes_the_package(tmp_path: Path, restored: History) -> None:
    hand("install", "sl")
    version = installed("sl")["sl"]
    done = run(tmp_path, "pkg: sl\n    state: absent")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pkg[sl]: removed {version}" in done.stdout.splitlines()
    assert installed("sl") == {"sl": None}


def test_removals_come_first_and_each_action_is_one_call(tmp_path: Path, restored: History) -> None:
    hand("install", "sl", "hello")
    hand("remove", "cowsay", "fortune-mod")
    done = run(
        tmp_path,
        "pkg: sl\n    state: absent",
        "pkg: hello\n    state: absent",
        "pkg: cowsay",
        "pkg: fortune-mod",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ours = [c.split() for c in restored.commandlines()]
    assert [words[1] for words in ours] == ["remove", "install"]
    assert set(ours[0][-2:]) == {"sl", "hello"}
    assert set(ours[1][-2:]) == {"cowsay", "fortune-mod"}


def test_a_pinned_version_is_installed_exactly(tmp_path: Path, restored: History) -> None:
    hand("remove", "hello")
    version = candidate("hello")
    done = run(tmp_path, f'pkg: hello\n    state: "{version}"')
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pkg[hello]: installed {version}" in done.stdout.splitlines()
    assert installed("hello") == {"hello": version}
    assert any(f"hello={version}" in c for c in restored.commandlines())


def test_a_pinned_version_the_lists_lack_fails_naming_what_they_have(
    tmp_path: Path, restored: History
) -> None:
    done = run(tmp_path, 'pkg: hello\n    state: "0.0.1-9"\n    update_cache: never')
    assert done.returncode == 1
    assert "version 0.0.1-9 is not in the package lists" in done.stdout + done.stderr
    assert candidate("hello") in done.stdout + done.stderr


def test_an_unknown_package_fails_naming_itself_and_the_rest_is_installed(
    tmp_path: Path, restored: History
) -> None:
    hand("remove", "sl", "hello")
    done = run(
        tmp_path,
        "pkg: sl\n    update_cache: never",
        "pkg: convergent-no-such-package\n    update_cache: never",
        "pkg: hello\n    update_cache: never",
    )
    assert done.returncode == 1
    text = done.stdout + done.stderr
    assert "pkg[convergent-no-such-package]" in text
    assert "convergent-no-such-package: not in the package lists; run apt-get update" in text
    assert installed("sl", "hello") == {"sl": candidate("sl"), "hello": candidate("hello")}
    (line,) = restored.commandlines()
    assert "convergent-no-such-package" not in line


def test_a_package_removed_by_hand_is_reinstalled_by_a_running_agent(
    tmp_path: Path, restored: History
) -> None:
    path = policy(tmp_path / "p.yaml", ["pkg: sl", "pkg: hello"])
    with Agent("run", str(path), "--state-dir", str(tmp_path / "state")) as agent:
        agent.wait_for_line(lambda line: line.startswith("converged"), timeout=BOUND)
        assert installed("sl")["sl"] is not None
        hand("remove", "sl")  # another terminal
        agent.wait_for_line(lambda line: line.startswith("pkg[sl]: installed "), timeout=BOUND)
        assert installed("sl")["sl"] == candidate("sl")
        agent.send(15)
        assert agent.wait(timeout=BOUND) == 0


def test_a_held_package_database_lock_is_waited_for_then_named(restored: History) -> None:
    """A program holding dpkg's frontend lock: apt waits (bounded) and says who holds it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
            "fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(PackageError) as caught:
            asyncio.run(asyncio.wait_for(Apt(lock_wait=1).install(["sl"], print), BOUND))
    finally:
        holder.kill()
        holder.wait(timeout=BOUND)
    message = str(caught.value)
    assert f"locked by another program (process {holder.pid} (python" in message
    assert "waited 1 s" in message
    assert restored.entries() == []


def test_latest_installs_the_candidate_and_then_changes_nothing(
    tmp_path: Path, restored: History
) -> None:
    hand("remove", "hello")
    done = run(tmp_path, "pkg: hello\n    state: latest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pkg[hello]: installed {candidate('hello')}" in done.stdout.splitlines()
    again = run(tmp_path, "pkg: hello\n    state: latest")
    assert again.returncode == 0 and "repaired: 0" in again.stdout
    assert len(restored.commandlines()) == 1


def test_update_cache_auto_refreshes_the_lists_once_then_names_what_is_still_unknown(
    tmp_path: Path, restored: History
) -> None:
    hand("remove", "sl")
    done = run(tmp_path, "pkg: sl", "pkg: convergent-no-such-package")
    assert done.returncode == 1
    text = done.stdout + done.stderr
    assert text.count("not in the package lists; refreshing them (apt-get update)") == 1
    assert (
        "unknown package: convergent-no-such-package: not in the package lists, "
        "even after apt-get update" in text
    )
    assert installed("sl") == {"sl": candidate("sl")}
