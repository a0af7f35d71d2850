"""Directories the agent creates on the way to a path (``cron_dir``, ``parents: true``)
are made by the same CHASE_SAFE rules: a user's symlink where a parent should be never
leads the agent into root's directory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.host.hostile import NOBODY, Hostile, needs_root, run_as_nobody

pytestmark = needs_root


@pytest.mark.parametrize("kind", ["cron", "file"])
def test_missing_parents_are_never_made_through_a_users_symlink(open_lab: Path, kind: str) -> None:
    precious = open_lab / "precious"
    precious.mkdir(mode=0o700)
    home = open_lab / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    run_as_nobody(lambda: (home / "a").symlink_to(precious))
    entry = {
        "cron": f"  - cron: job\n    cron_dir: {home}/a/b/c\n    cmd: 'true'\n    special: daily\n",
        "file": f"  - file: {home}/a/b/c/f\n    content: x\n    parents: true\n",
    }[kind]
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n" + entry)
    done = convergent(
        "run",
        "--converged-timeout",
        "0",
        "--state-dir",
        str(open_lab / "state"),
        str(policy),
        timeout=60,
    )
    assert done.returncode == 1
    assert f"the symlink {home}/a is owned by nobody" in done.stderr, done.stderr
    assert list(precious.iterdir()) == []


def test_a_parent_the_agent_just_made_and_a_user_swaps_for_a_symlink_is_not_followed(
    open_lab: Path,
) -> None:
    precious = open_lab / "precious"
    precious.mkdir(mode=0o700)
    home = open_lab / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    policy = open_lab / "p.yaml"
    policy.write_text(
        f"resources:\n  - file: {home}/a/b/f\n    content: x\n    parents: true\n"
        f"  - cron: job\n    cron_dir: {home}/a/c\n    cmd: 'true'\n    special: daily\n"
    )

    def swap(stopped):  # type: ignore[no-untyped-def]
        n = 0
        while not stopped() and n < 1_000_000:
            try:
                os.rename(home / "a", home / f"old{n}")
                (home / "a").symlink_to(precious)
                n += 1
            except OSError:
                with contextlib.suppress(OSError):
                    if (home / "a").is_symlink():
                        (home / "a").unlink()
        return n

    with Hostile(swap) as user:
        for _ in range(10):
            convergent(
                "run",
                "--converged-timeout",
                "0",
                "--state-dir",
                str(open_lab / "state"),
                str(policy),
                timeout=60,
            )
    assert user.result > 0
    assert list(precious.iterdir()) == []
    assert precious.stat().st_mode & 0o777 == 0o700
