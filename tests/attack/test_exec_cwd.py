"""An ``exec``'s working directory gives its command nothing its user could not reach.

A command run as a user (``user:``) enters its ``cwd`` as that user: the interpreter's
child code would ``chdir`` as root, before the user switch, and the command would then
read a directory she may not enter. A root command's ``cwd`` is found as every path the
agent changes (CHASE_SAFE) and entered through the descriptor found: another user's
symlink never steers it into root's places, not even one swapped in after the check.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.agent import convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root, run_as_nobody

pytestmark = needs_root


def _run(lab: Path, body: str) -> tuple[int, str]:
    policy = lab / "p.yaml"
    policy.write_text("resources:\n" + body)
    done = convergent(
        "run", str(policy), "--converged-timeout", "0", "--state-dir", str(lab / "state")
    )
    return done.returncode, done.stdout + done.stderr


def _private(lab: Path) -> Path:
    """``lab/priv/pub``: readable inside, behind a directory only root may enter."""
    pub = lab / "priv" / "pub"
    pub.mkdir(parents=True)
    (lab / "priv").chmod(0o700)
    (pub / "data").write_text("TOPSECRET\n")
    return pub


def test_a_users_command_enters_its_cwd_as_that_user(open_lab: Path) -> None:
    pub = _private(open_lab)
    body = (
        f"  - exec: peek\n    cmd: [cat, data]\n    cwd: {pub}\n    user: nobody\n"
        f"  - exec: fine\n    cmd: [pwd]\n    cwd: {open_lab}\n    user: nobody\n"
    )
    code, out = _run(open_lab, body)
    assert code == 1, out
    assert "TOPSECRET" not in out
    assert f"cwd {pub}: the command's user may not enter it" in out
    assert f"exec[fine]: stdout: {open_lab}" in out


def test_a_root_command_is_not_steered_by_another_users_symlink(open_lab: Path) -> None:
    pub = _private(open_lab)
    hers = open_lab / "hers"
    hers.mkdir()
    os.chown(hers, NOBODY, NOBODY)
    run_as_nobody(lambda: os.symlink(pub, hers / "work"))
    code, out = _run(open_lab, f"  - exec: r\n    cmd: [touch, steered]\n    cwd: {hers}/work\n")
    assert code == 1, out
    assert f"the symlink {hers}/work is owned by nobody" in out
    assert not (pub / "steered").exists()


def test_a_root_command_runs_in_the_directory_checked_when_its_path_is_swapped(
    open_lab: Path,
) -> None:
    """Another user swaps her directory with her symlink into root's private directory
    as fast as she can, while 150 root commands run there: each command enters the
    directory the agent checked (a descriptor), never what the name leads to a moment
    later. Some find the symlink at their check and are refused; none runs in root's
    directory."""
    pub = _private(open_lab)
    hers = open_lab / "hers"
    hers.mkdir()
    os.chown(hers, NOBODY, NOBODY)
    work, link = hers / "work", hers / "work.link"

    def prepare() -> None:
        work.mkdir(mode=0o777)
        work.chmod(0o777)
        os.symlink(pub, link)

    run_as_nobody(prepare)

    def swap(stopped: Callable[[], bool]) -> int:
        swaps = 0
        while not stopped():
            swaps += exchange(str(work), str(link))
        return swaps

    count = 150
    body = "".join(
        f"  - exec: r{i}\n    cmd: [touch, ran-{i}]\n    cwd: {work}\n" for i in range(count)
    )
    with Hostile(swap) as user:
        _code, out = _run(open_lab, body)
    assert user.result > 0
    steered = sorted(p.name for p in pub.iterdir() if p.name.startswith("ran-"))
    assert steered == [], out
    real = work if not work.is_symlink() else link
    ran = [p for p in real.iterdir() if p.name.startswith("ran-")]
    assert ran, out  # some commands ran (in her directory, as checked)


def test_a_cwd_written_with_a_trailing_slash_or_dot_is_that_directory(open_lab: Path) -> None:
    """``cwd: /srv/app/`` runs in /srv/app (never in /), and a missing one is an error."""
    app = open_lab / "app"
    app.mkdir()
    body = (
        f"  - exec: slash\n    cmd: [pwd]\n    cwd: {app}/\n"
        f"  - exec: dot\n    cmd: [pwd]\n    cwd: {app}/.\n"
        f"  - exec: gone\n    cmd: [pwd]\n    cwd: {open_lab}/nope/\n"
    )
    code, out = _run(open_lab, body)
    assert code == 1, out
    assert f"exec[slash]: stdout: {app}\n" in out and f"exec[dot]: stdout: {app}\n" in out
    assert f"cwd {open_lab}/nope/ does not exist" in out
    assert "exec[gone]: stdout" not in out


def test_a_cwd_ending_in_dotdot_is_the_parent_the_walk_checked(open_lab: Path) -> None:
    """``cwd: .../evil/d/..`` while she swaps ``d`` with her directory inside root's
    sticky ``pub``: the parent a command enters is the one the walk reached and checked
    (hers), never root's ``pub``, which the walk refuses."""
    evil, pub = open_lab / "evil", open_lab / "pub"
    evil.mkdir()
    os.chown(evil, NOBODY, NOBODY)
    pub.mkdir()
    pub.chmod(0o1777)

    def prepare() -> None:
        (evil / "d").mkdir()
        (pub / "e").mkdir()
        (evil / "d").chmod(0o777)

    run_as_nobody(prepare)

    def swap(stopped: Callable[[], bool]) -> int:
        swaps = 0
        while not stopped():
            swaps += exchange(str(evil / "d"), str(pub / "e"))
        return swaps

    count = 150
    body = "".join(
        f"  - exec: r{i}\n    cmd: [touch, ran-{i}]\n    cwd: {evil}/d/..\n" for i in range(count)
    )
    with Hostile(swap) as user:
        _code, out = _run(open_lab, body)
    assert user.result > 0
    assert sorted(p.name for p in pub.iterdir() if p.name.startswith("ran-")) == [], out
    assert [p for p in evil.iterdir() if p.name.startswith("ran-")], out


def test_a_root_command_with_a_group_or_as_root_by_name_is_not_steered(open_lab: Path) -> None:
    """``group:`` alone, ``user: root`` or ``user: 0`` leave the command root: its cwd is
    walked and entered like any root command's, never by name."""
    pub = _private(open_lab)
    hers = open_lab / "hers"
    hers.mkdir()
    os.chown(hers, NOBODY, NOBODY)
    run_as_nobody(lambda: os.symlink(pub, hers / "work"))
    body = "".join(
        f"  - exec: {name}\n    cmd: [cat, data]\n    cwd: {hers}/work\n    {who}\n"
        for name, who in (("g", "group: nogroup"), ("r", "user: root"), ("z", "user: 0"))
    )
    code, out = _run(open_lab, body)
    assert code == 1, out
    assert "TOPSECRET" not in out
    assert out.count(f"the symlink {hers}/work is owned by nobody") == 3, out


def test_a_users_symlink_to_dot_does_not_lead_a_root_command_into_its_directory(
    open_lab: Path,
) -> None:
    """Her ``b -> .`` in root's sticky directory (``cwd: /tmp/build`` and she made
    ``/tmp/build -> .``): the step from her symlink into root's directory is refused."""
    sticky = open_lab / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    run_as_nobody(lambda: os.symlink(".", sticky / "b"))
    code, out = _run(open_lab, f"  - exec: x\n    cmd: [pwd]\n    cwd: {sticky}/b\n")
    assert code == 1, out
    assert f"the symlink {sticky}/b is owned by nobody" in out
    assert "stdout" not in out


def test_a_users_cwd_that_is_a_file_is_named_as_such(open_lab: Path) -> None:
    (open_lab / "plain").write_text("")
    body = f"  - exec: x\n    cmd: [pwd]\n    cwd: {open_lab}/plain\n    user: nobody\n"
    code, out = _run(open_lab, body)
    assert code == 1, out
    assert f"cwd {open_lab}/plain is not a directory" in out
