"""``exec``'s run controls through the real CLI: ``returns``, ``stdin``, ``removes``,
``umask``, ``user``/``group`` (proven by ``id`` output). Each: the change, a second run
that changes nothing, ``--noop`` changing nothing; bad values refused at load.
"""

from __future__ import annotations

import grp  # noqa: F401  (imported here: the unprivileged child cannot read the venv)
import pwd  # noqa: F401
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import CommandError
from convergent.resources import runas
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody
from tests.resources.accounts_lab import (
    Accounts,
    accounts,
    changed,
    entry,
    needs_shadow,
    ok,
    passwd,
    policy,
    run,
)

__all__ = ["accounts"]


def test_returns_lists_the_exit_codes_that_count_as_success(tmp_path: Path) -> None:
    made = tmp_path / "made"
    body = entry(
        "exec", "two", cmd=["sh", "-c", f"touch {made}; exit 2"], creates=str(made), returns=[0, 2]
    )
    assert "would change" in ok(run(tmp_path, body, "--noop"))
    assert not made.exists()
    assert changed(ok(run(tmp_path, body))) == 1 and made.exists()
    assert changed(ok(run(tmp_path, body))) == 0
    plain = entry("exec", "plain", cmd=["sh", "-c", "exit 2"])
    done = run(tmp_path, plain)
    assert done.returncode != 0 and "exited with code 2" in done.stdout + done.stderr
    zero = entry("exec", "zero", cmd=["true"], returns=[2])
    done = run(tmp_path, zero)
    assert done.returncode != 0 and "exited with code 0" in done.stdout + done.stderr


def test_stdin_is_fed_to_the_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    body = entry(
        "exec", "feed", cmd=["sh", "-c", f"cat > {out}"], stdin="one\ntwo\n", creates=str(out)
    )
    assert "would change" in ok(run(tmp_path, body, "--noop"))
    assert not out.exists()
    ok(run(tmp_path, body))
    assert out.read_text() == "one\ntwo\n"
    assert changed(ok(run(tmp_path, body))) == 0


def test_removes_runs_only_while_the_path_exists(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("x")
    body = entry("exec", "rm", cmd=["rm", str(victim)], removes=str(victim))
    assert "would change" in ok(run(tmp_path, body, "--noop"))
    assert victim.exists()
    assert changed(ok(run(tmp_path, body))) == 1
    assert not victim.exists()
    assert changed(ok(run(tmp_path, body))) == 0


@pytest.mark.parametrize(("umask", "mode"), [("077", 0o600), ("0027", 0o640)])
def test_umask_sets_the_mode_of_what_the_command_creates(
    tmp_path: Path, umask: str, mode: int
) -> None:
    made = tmp_path / "made"
    body = entry("exec", "touch", cmd=["touch", str(made)], creates=str(made), umask=umask)
    ok(run(tmp_path, body, "--noop"))
    assert not made.exists()
    ok(run(tmp_path, body))
    assert made.stat().st_mode & 0o777 == mode
    assert changed(ok(run(tmp_path, body))) == 0


@needs_root
@needs_shadow
def test_a_command_runs_as_a_managed_user_created_first(tmp_path: Path, accounts: Accounts) -> None:
    """The exec needs its user: the user is created before the command runs as it."""
    name, uid = accounts.name(), accounts.free_id()
    box = lab(tmp_path) / "box"
    box.mkdir(mode=0o777)
    box.chmod(0o1777)
    made = box / "made"
    body = entry(
        "exec",
        "as-user",
        cmd=["sh", "-c", f'id -u; id -G; echo "home=$HOME"; touch {made}'],
        user=name,
        creates=str(made),
    ) + entry("user", name, uid=uid, create_home=False, home="/nonexistent")
    out = ok(run(tmp_path, body, "--noop"))
    assert name not in passwd() and not made.exists(), out
    out = ok(run(tmp_path, body))
    assert f"exec[as-user]: stdout: {uid}" in out
    gid = passwd()[name][3]
    assert f"exec[as-user]: stdout: {gid}\n" in out  # id -G: its own group, not root's
    assert "exec[as-user]: stdout: home=/nonexistent" in out
    assert made.stat().st_uid == uid
    assert changed(ok(run(tmp_path, body))) == 0


@needs_root
def test_a_command_runs_with_the_given_group(tmp_path: Path) -> None:
    made = tmp_path / "made"
    body = entry(
        "exec",
        "as-group",
        cmd=["sh", "-c", f"id -u; id -g; id -G; touch {made}"],
        group=NOBODY,
        creates=str(made),
    )
    ok(run(tmp_path, body, "--noop"))
    assert not made.exists()
    out = ok(run(tmp_path, body))
    assert "exec[as-group]: stdout: 0\n" in out
    assert out.count(f"exec[as-group]: stdout: {NOBODY}\n") == 2
    assert (made.stat().st_uid, made.stat().st_gid) == (0, NOBODY)
    assert changed(ok(run(tmp_path, body))) == 0


@needs_root
def test_guards_run_as_the_user_too(tmp_path: Path) -> None:
    body = entry(
        "exec", "guarded", cmd=["true"], user="nobody", onlyif=["sh", "-c", "test $(id -u) = 0"]
    )
    assert changed(ok(run(tmp_path, body))) == 0


@needs_root
def test_running_as_another_user_without_root_is_a_clear_error() -> None:
    def attempt() -> str:
        try:
            runas.credentials("exec[x]", "", "root", None, None)
        except CommandError as exc:
            return str(exc)
        return "switched"

    message = run_as_nobody(attempt)
    assert "needs root" in message and f"uid {NOBODY}" in message and "exec[x]" in message


def test_an_unknown_user_is_a_clear_error(tmp_path: Path) -> None:
    body = entry("exec", "who", cmd=["true"], user="cvt8-no-such-user")
    done = run(tmp_path, body)
    assert done.returncode != 0
    assert "there is no user 'cvt8-no-such-user'" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("params", "where", "words"),
    [
        ({"returns": [0, 256]}, ":5:", "0 to 255"),
        ({"returns": []}, ":5:", "at least one"),
        ({"umask": "0o22"}, ":5:", "octal digits"),
        ({"umask": "1777"}, ":5:", "octal digits"),
        ({"removes": "relative/path"}, ":5:", "absolute"),
        ({"user": ""}, ":5:", "not empty"),
        ({"group": 4294967295}, ":5:", "out of range"),
        ({"stdin": 5}, ":5:", "expected str"),
    ],
)
def test_bad_run_controls_are_refused_at_load(
    tmp_path: Path, params: dict[str, Any], where: str, words: str
) -> None:
    body = entry("exec", "bad", cmd=["true"], shell=False, **params)
    path = policy(tmp_path, body)
    done = run(tmp_path, body)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert f"{path}{where}" in text and words in text, text
