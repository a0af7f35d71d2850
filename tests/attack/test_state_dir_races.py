"""The state directory is the agent's own: a local user who may rename it (she owns a
directory above it) never gets the agent to keep its state, secrets included, in a
directory of hers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root

pytestmark = needs_root


def _run(state: Path, policy: Path) -> subprocess.CompletedProcess[str]:
    return convergent(
        "run", "--converged-timeout", "0", "--state-dir", str(state), str(policy), timeout=60
    )


def test_a_state_directory_a_user_can_rename_is_refused_before_anything_is_written(
    open_lab: Path,
) -> None:
    root = open_lab
    home = root / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    secret = root / "secret"
    secret.mkdir(mode=0o700)
    policy = root / "p.yaml"
    policy.write_text(
        "resources:\n  - password: db\n    length: 32\n"
        f"  - file: {secret}/pw\n    mode: '0600'\n"
        "    recv:\n      content: password[db].password\n"
    )
    state = home / "state"
    state.mkdir(mode=0o700)  # root's own, 0700: only its parent is the user's
    decoy = home / "decoy"

    def prepare() -> None:
        decoy.mkdir(mode=0o777)
        os.chmod(decoy, 0o777)

    with Hostile(lambda stopped: prepare()):
        pass

    def swap(stopped):  # type: ignore[no-untyped-def]
        n = 0
        while not stopped() and n < 2_000_000:
            n += exchange(str(state), str(decoy))
        return n

    outcomes = []
    with Hostile(swap) as user:
        for _ in range(20):
            outcomes.append(_run(state, policy))
    assert user.result > 0, [o.stderr for o in outcomes]

    def leaked() -> list[str]:
        found = []
        for d in (state, decoy):
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                try:
                    data = (d / name).read_bytes()
                except OSError:
                    continue
                if password and password in data:
                    found.append(str(d / name))
        return found

    pw = secret / "pw"
    password = pw.read_bytes() if pw.exists() else b""
    from tests.host.hostile import run_as_nobody

    assert run_as_nobody(leaked) == []
    for done in outcomes:
        assert done.returncode == 2, done.stderr
        assert f"{home} belongs to uid {NOBODY}, who could swap the state directory" in done.stderr


def test_a_state_directory_reached_through_a_users_symlink_is_refused(open_lab: Path) -> None:
    home = open_lab / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    real = open_lab / "real"
    real.mkdir(mode=0o700)
    (home / "link").symlink_to(real)
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n  - noop: x\n")
    done = _run(home / "link" / "state", policy)
    assert done.returncode == 2
    assert f"{home} belongs to uid {NOBODY}" in done.stderr
    assert not (real / "state").exists()


def test_a_state_directory_behind_a_users_symlink_in_a_sticky_directory_is_refused(
    open_lab: Path,
) -> None:
    """In a sticky directory (as /tmp) a user's symlink is hers to point elsewhere between
    two of the agent's steps, at a directory of hers (the kernel follows it for root
    unless fs.protected_symlinks is on): refused before anything is written."""
    shared = open_lab / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    real = open_lab / "real"
    real.mkdir(mode=0o700)
    link = shared / "state"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n  - noop: x\n")
    done = _run(link, policy)
    assert done.returncode == 2
    assert f"{link} is a symlink of uid {NOBODY}, who could point it at a directory" in (
        done.stderr
    )
    assert os.listdir(real) == []


def test_a_parent_a_user_makes_while_the_agent_makes_its_directory_is_refused(
    open_lab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start through a parent that does not exist yet, in a sticky directory:
    what a user puts there between the agent's check and its mkdir (a symlink to a
    directory of hers, or a directory of hers) is seen before anything is written."""
    from convergent.state import StateError, open_state_dir, statedir

    shared = open_lab / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    hers = open_lab / "hers"
    hers.mkdir(mode=0o777)
    os.chown(hers, NOBODY, NOBODY)
    made = statedir._make_dir
    for how in ("symlink", "directory"):
        parent = shared / how

        def race(path: str, parent: Path = parent, how: str = how) -> None:
            if how == "symlink":
                parent.symlink_to(hers)
                os.lchown(parent, NOBODY, NOBODY)
            else:
                parent.mkdir(mode=0o777)
                os.chown(parent, NOBODY, NOBODY)
            made(path)

        monkeypatch.setattr(statedir, "_make_dir", race)
        with pytest.raises(StateError, match=f"uid {NOBODY}"):
            open_state_dir(str(parent / "state"), mode="exclusive").close()
        target = hers if how == "symlink" else parent
        assert os.listdir(target / "state") == []  # made, but nothing written in it


def test_a_state_directory_behind_roots_own_symlink_works(open_lab: Path) -> None:
    real = open_lab / "real"
    real.mkdir(mode=0o755)
    (open_lab / "link").symlink_to("real")
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n  - noop: x\n")
    done = _run(open_lab / "link" / "state", policy)
    assert done.returncode == 0, done.stderr
    assert (real / "state" / "state.db").is_file()


def test_restore_and_reset_refuse_a_state_directory_a_user_can_rename(open_lab: Path) -> None:
    home = open_lab / "u"
    home.mkdir()
    state = home / "state"
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n  - password: db\n    length: 16\n")
    assert _run(state, policy).returncode == 0  # made while the directory was root's
    os.chown(home, NOBODY, NOBODY)
    for args in (["restore", "--yes"], ["reset", "--yes"]):
        done = subprocess.run(
            [sys.executable, "-m", "convergent", "state", *args, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert f"{home} belongs to uid {NOBODY}" in done.stderr, done.stderr
    assert (state / "state.db").stat().st_size > 0
