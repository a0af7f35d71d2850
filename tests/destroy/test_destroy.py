"""``convergent destroy``: what a policy describes driven to its absent state, last first.

Every test runs the real command on real files, processes and accounts; an order is
observed with inotify (the kernel's order of the deletions), never with timings.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.destroy.inotify import Deletions
from tests.e2e.agent import convergent
from tests.resources.accounts_lab import Accounts, accounts, group_file, needs_shadow, passwd

__all__ = ["accounts"]  # the fixture, imported to be used here


def _policy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(body)
    return path


def _run(policy: Path, tmp_path: Path) -> str:
    done = convergent(
        "run", str(policy), "--converged-timeout", "0", "--state-dir", str(tmp_path / "state")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _destroy(policy: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return convergent("destroy", str(policy), "--state-dir", str(tmp_path / "state"), *extra)


def _tree(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path)] = path.read_bytes() if path.is_file() else None
    return found


def _chain(tmp_path: Path) -> tuple[Path, list[Path]]:
    site = tmp_path / "site"
    site.mkdir()
    files = [site / name for name in ("first", "second", "third")]
    body = "resources:\n"
    for i, path in enumerate(files):
        body += f'  - file: {path}\n    content: "{i}\\n"\n'
        if i:
            body += f"    require: [file[{files[i - 1]}]]\n"
    return _policy(tmp_path, body), files


def test_a_chain_of_three_is_removed_last_first(tmp_path: Path) -> None:
    policy, files = _chain(tmp_path)
    _run(policy, tmp_path)
    deletions = Deletions(str(files[0].parent))
    try:
        done = _destroy(policy, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert deletions.read(3) == [str(f) for f in reversed(files)]
    finally:
        deletions.close()
    assert not any(f.exists() for f in files)
    assert "destroy: 3 resource(s) taken down, 0 left alone" in done.stdout


def test_a_file_inside_a_directory_goes_before_the_directory(tmp_path: Path) -> None:
    """The automatic edge (directory, then the file in it) is turned around too."""
    site = tmp_path / "site"
    policy = _policy(
        tmp_path,
        f"resources:\n  - file: {site}/inner/leaf\n    content: x\n"
        f"  - file: {site}/inner\n    state: directory\n"
        f"  - file: {site}\n    state: directory\n",
    )
    _run(policy, tmp_path)
    deletions = Deletions(str(site), str(site / "inner"))
    try:
        done = _destroy(policy, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert deletions.read(2) == [f"{site}/inner/leaf", f"{site}/inner"]
    finally:
        deletions.close()
    assert not site.exists()


def test_noop_changes_nothing_and_names_what_would_go(tmp_path: Path) -> None:
    policy, files = _chain(tmp_path)
    _run(policy, tmp_path)
    before = _tree(tmp_path / "site")
    done = _destroy(policy, tmp_path, "--noop")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _tree(tmp_path / "site") == before
    for path in files:
        assert f"file[{path}]: would change: removed" in done.stdout
    assert "noop: 3 resource(s) would be removed or stopped; nothing was changed" in done.stdout


def test_a_kind_with_no_absent_state_is_left_alone_and_named(tmp_path: Path) -> None:
    """exec has no absent state: what it made stays, and the order it stood for holds
    (the file after the command still goes before the file before it)."""
    made = tmp_path / "made"
    site = tmp_path / "site"
    site.mkdir()
    policy = _policy(
        tmp_path,
        "resources:\n"
        f"  - file: {site}/before\n    content: b\n"
        f"  - exec: make\n    cmd: [touch, {made}]\n    creates: {made}\n"
        f"    require: [file[{site}/before]]\n"
        f"  - file: {site}/after\n    content: a\n    require: [exec[make]]\n",
    )
    _run(policy, tmp_path)
    deletions = Deletions(str(site))
    try:
        done = _destroy(policy, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert deletions.read(2) == [f"{site}/after", f"{site}/before"]
    finally:
        deletions.close()
    assert "exec[make]: left alone: exec has no absent state" in done.stdout
    assert made.exists()


def test_a_directory_holding_what_the_policy_does_not_name_is_left(tmp_path: Path) -> None:
    site = tmp_path / "site"
    policy = _policy(
        tmp_path,
        f"resources:\n  - file: {site}\n    state: directory\n"
        f"  - file: {site}/managed\n    content: x\n",
    )
    _run(policy, tmp_path)
    (site / "precious").write_text("not in the policy")
    done = _destroy(policy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (site / "managed").exists()
    assert (site / "precious").read_text() == "not in the policy"
    assert (
        f"file[{site}]: left: {site} is a directory holding what destroy does not remove"
        in done.stdout
    )


def test_destroy_never_removes_through_a_symlink(tmp_path: Path) -> None:
    """A parent swapped for a symlink to elsewhere: the file there stays, the error says
    why; a symlink at the named path is removed itself, never what it points to."""
    site = tmp_path / "site"
    outside = tmp_path / "outside"
    policy = _policy(
        tmp_path,
        f"resources:\n  - file: {site}/sub/conf\n    content: x\n    parents: true\n"
        f"  - file: {site}/link\n    content: y\n",
    )
    _run(policy, tmp_path)
    outside.mkdir()
    (outside / "conf").write_text("someone else's")
    (outside / "target").write_text("pointed at")
    (site / "sub" / "conf").unlink()
    (site / "sub").rmdir()
    (site / "sub").symlink_to(outside)
    (site / "link").unlink()
    (site / "link").symlink_to(outside / "target")
    done = _destroy(policy, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (outside / "conf").read_text() == "someone else's"
    assert (outside / "target").read_text() == "pointed at"
    assert not (site / "link").is_symlink()
    assert f"leads to {outside}/conf through a symlink" in done.stderr


def test_a_policy_that_fails_to_load_is_refused_whole(tmp_path: Path) -> None:
    policy, files = _chain(tmp_path)
    _run(policy, tmp_path)
    policy.write_text(policy.read_text() + "  - file: relative/path\n")
    done = _destroy(policy, tmp_path)
    assert done.returncode == 2
    assert "destroy runs only a policy that loads" in done.stderr
    assert all(f.exists() for f in files)


@pytest.fixture
def pids(kill_at_end: list[int]) -> list[int]:
    """PIDs of the processes a test's run started, killed at the end."""
    return kill_at_end


def _find(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if token.encode() in cmdline:
                    found.append(int(entry))
    return found


def test_a_process_is_stopped(tmp_path: Path, pids: list[int]) -> None:
    token = f"{random.randint(10**6, 10**7)}.5"
    policy = _policy(tmp_path, f'resources:\n  - process: sleeper\n    cmd: [sleep, "{token}"]\n')
    _run(policy, tmp_path)
    pids.extend(_find(token))
    assert len(pids) == 1
    fd = os.pidfd_open(pids[0])
    try:
        done = _destroy(policy, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        import select

        assert select.select([fd], [], [], 10)[0], "the process still runs"
    finally:
        os.close(fd)
    assert "process[sleeper]: stopped" in done.stdout


@needs_shadow
def test_packages_and_accounts_stay_without_destroy_remove(
    tmp_path: Path, accounts: Accounts
) -> None:
    """A user the policy made, and a package it names, are not touched by destroy unless
    the entry says ``destroy: remove``; a file beside them is removed."""
    name = accounts.name()
    policy = _policy(
        tmp_path,
        f"resources:\n  - user: {name}\n    create_home: false\n"
        f"  - group: {name}x\n"
        f"  - pkg: sl\n    backend: apt\n  - file: {tmp_path}/f\n    content: x\n",
    )
    accounts.groups.append(f"{name}x")
    subprocess.run(["groupadd", f"{name}x"], check=True, capture_output=True)
    subprocess.run(["useradd", "-M", name], check=True, capture_output=True)
    dpkg = Path("/var/lib/dpkg/status").read_bytes()
    done = _destroy(policy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert name in passwd()
    assert f"{name}x" in group_file()
    assert Path("/var/lib/dpkg/status").read_bytes() == dpkg
    assert not (tmp_path / "f").exists()
    for vid, kind in ((f"user[{name}]", "user"), (f"group[{name}x]", "group"), ("pkg[sl]", "pkg")):
        assert (
            f"{vid}: left alone: kept: a {kind} is removed only when its entry says "
            "destroy: remove" in done.stdout
        )


def test_only_tears_down_the_bundle_uses_named(tmp_path: Path) -> None:
    """--only web[main]: that use's files go; base, which it requires, and the other uses
    stay; an unknown use is refused with the policy's uses."""
    from tests.invoke.site import site

    policy = site(tmp_path)
    _run(policy, tmp_path)
    out = tmp_path / "out"
    done = _destroy(policy, tmp_path, "--only", "web[main]")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "base",
        "db-main.conf",
        "other",
        "web-backup.conf",
    ]
    done = _destroy(policy, tmp_path, "--only", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["base", "db-main.conf", "other"]
    refused = _destroy(policy, tmp_path, "--only", "mail")
    assert refused.returncode == 2
    assert "no bundle use named mail" in refused.stderr
    assert "the policy's bundle uses: db[main], web[backup], web[main]" in refused.stderr


def test_destroy_remove_on_a_directory_removes_what_is_in_it_without_following_links(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not ours")
    policy = _policy(
        tmp_path, f"resources:\n  - file: {site}\n    state: directory\n    destroy: remove\n"
    )
    _run(policy, tmp_path)
    (site / "sub").mkdir()
    (site / "sub" / "data").write_text("x")
    (site / "link").symlink_to(outside)
    done = _destroy(policy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not site.exists()
    assert (outside / "keep").read_text() == "not ours"


@needs_shadow
def test_with_destroy_remove_the_account_goes(tmp_path: Path, accounts: Accounts) -> None:
    name = accounts.name()
    policy = _policy(
        tmp_path,
        f"resources:\n  - user: {name}\n    create_home: false\n    destroy: remove\n"
        f"  - user: {name}k\n    create_home: false\n",
    )
    accounts.users.append(f"{name}k")
    _run(policy, tmp_path)
    assert name in passwd() and f"{name}k" in passwd()
    noop = _destroy(policy, tmp_path, "--noop")
    assert noop.returncode == 0, noop.stdout + noop.stderr
    assert name in passwd()
    done = _destroy(policy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert name not in passwd()
    assert f"{name}k" in passwd()


def test_independent_resources_are_torn_down_at_the_same_time(
    tmp_path: Path, pids: list[int]
) -> None:
    """Two processes that meet on a FIFO when asked to stop: each one's stop completes only
    while the other is being stopped too. Stopped one after the other, the first would
    wait for the second until its stop_timeout and be killed before writing its mark."""
    os.mkfifo(tmp_path / "meet")
    token = f"{random.randint(10**6, 10**7)}.75"
    loop = f"while :; do sleep {token} & wait $!; done"
    writer = f"trap 'echo hi > {tmp_path}/meet; touch {tmp_path}/a-done; exit 0' TERM; {loop}"
    reader = f"trap 'cat {tmp_path}/meet >/dev/null; touch {tmp_path}/b-done; exit 0' TERM; {loop}"
    policy = _policy(
        tmp_path,
        "resources:\n"
        f'  - process: a\n    cmd: [bash, -c, "{writer}"]\n    stop_timeout: 20\n'
        f'  - process: b\n    cmd: [bash, -c, "{reader}"]\n    stop_timeout: 20\n',
    )
    _run(policy, tmp_path)
    pids.extend(_find(token))
    done = _destroy(policy, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "a-done").exists() and (tmp_path / "b-done").exists(), done.stdout
