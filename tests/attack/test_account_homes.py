"""A new user's home is made only where no other local user can redirect it.

useradd ``-m`` makes the home by name, following symlinks, gives it to the new user and
copies /etc/skel into it; a home that exists already is left as it is. So a user who may
write a directory on the home's way could have root make (and chown) a directory where
her symlink leads, or hand the new user a home of hers (her ``.bashrc``, her
``authorized_keys``). The agent refuses such a home before any tool runs, and names why.
A group the user should join that does not exist fails once, before useradd takes the
account files' locks (its failure used to wake the agent's own watch of those files,
which ran it again, without end).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from convergent.host import accounts as accounts_host
from tests.host.hostile import NOBODY, needs_root, run_as_nobody
from tests.resources.accounts_lab import Accounts, accounts, entry, needs_shadow, passwd, run

__all__ = ["accounts"]

pytestmark = [needs_root, needs_shadow]


def _refused(tmp_path: Path, body: str, words: str) -> None:
    done = run(tmp_path, body)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert words in text and "nothing was changed" in text, text


def test_a_home_through_another_users_symlink_is_refused(
    open_lab: Path, tmp_path: Path, accounts: Accounts
) -> None:
    name = accounts.name()
    target = open_lab / "roots"
    target.mkdir()
    hers = open_lab / "hers"
    hers.mkdir()
    os.chown(hers, NOBODY, NOBODY)
    run_as_nobody(lambda: os.symlink(target, hers / "x"))
    _refused(tmp_path, entry("user", name, home=f"{hers}/x/h"), f"{hers} is uid {NOBODY}'s")
    assert not (target / "h").exists()
    assert name not in passwd()


def test_a_home_another_user_made_first_is_refused(
    open_lab: Path, tmp_path: Path, accounts: Accounts
) -> None:
    name = accounts.name()
    home = open_lab / "home"

    def plant() -> None:
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA hers\n")

    os.chmod(open_lab, 0o1777)
    run_as_nobody(plant)
    _refused(tmp_path, entry("user", name, home=str(home)), f"belongs to uid {NOBODY}")
    assert name not in passwd()


def test_a_home_others_may_make_first_is_refused(tmp_path: Path, accounts: Accounts) -> None:
    """/tmp is sticky: nobody may replace root's names there, but anyone may make a new
    one, the home included, before useradd does."""
    name = accounts.name()
    home = Path(tempfile.gettempdir()) / f"{name}-home"
    _refused(tmp_path, entry("user", name, home=str(home)), "others may make it in /tmp first")
    assert not home.exists() and name not in passwd()


def test_a_home_below_roots_directories_is_made(tmp_path: Path, accounts: Accounts) -> None:
    """The refusals above leave the usual case alone: under /home, or a directory of
    root's below the sticky /tmp (pytest's own)."""
    name = accounts.name()
    home = tmp_path / "homes" / name
    home.parent.mkdir()
    done = run(tmp_path, entry("user", name, home=str(home)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert home.is_dir() and home.stat().st_uid == int(passwd()[name][2])


def test_a_missing_group_fails_once_and_the_run_ends(tmp_path: Path, accounts: Accounts) -> None:
    name, group = accounts.name(), accounts.name()
    done = run(tmp_path, entry("user", name, groups=[group], create_home=False))
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert text.count(f"group {group!r} does not exist") == 1, text
    assert name not in passwd()


def test_an_existing_home_others_may_write_is_refused(
    open_lab: Path, tmp_path: Path, accounts: Accounts
) -> None:
    """Root's, but anyone may add to it (a .profile the new user's login runs)."""
    name = accounts.name()
    home = open_lab / "shared"
    home.mkdir()
    home.chmod(0o1777)
    run_as_nobody(lambda: (home / ".profile").write_text("echo hers\n"))
    _refused(tmp_path, entry("user", name, home=str(home)), "others may write it")
    assert name not in passwd()


def test_the_home_checked_is_useradds_own_default(tmp_path: Path) -> None:
    """Without ``home``, useradd's base (``HOME=`` of its defaults) is the one checked,
    and given to useradd with -d: the two cannot differ."""
    defaults = tmp_path / "useradd"
    defaults.write_text("# useradd defaults\nSHELL=/bin/sh\nHOME=/srv/people/\n")
    assert accounts_host.default_home("ann", str(defaults)) == "/srv/people/ann"
    assert accounts_host.default_home("ann", str(tmp_path / "none")) == "/home/ann"
