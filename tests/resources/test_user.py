"""``user`` and ``group`` through the real CLI on real accounts: each parameter changes the
account, a second run changes nothing, ``--noop`` changes nothing; the hash never shows;
a running agent puts back a user removed by hand; bad values are refused at load.

Accounts have a test prefix and are removed in finally (``accounts_lab``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from convergent.host import accounts as accounts_host
from convergent.resources.base import Context
from convergent.resources.user import User
from tests.e2e.agent import TIMEOUT, Agent
from tests.host.hostile import NOBODY, needs_root, run_as_nobody
from tests.resources.accounts_lab import (
    Accounts,
    accounts,
    changed,
    entry,
    group_file,
    needs_shadow,
    ok,
    passwd,
    policy,
    run,
    shadow,
)
from tests.waits import Inotify

__all__ = ["accounts"]

pytestmark = needs_shadow
IN_MOVED_TO = 0x80
HASH_A = "$6$cvt8salt$" + "A" * 86
HASH_B = "$6$cvt8salt$" + "B" * 86


def cycle(tmp: Path, before: str, after: str, probe: Callable[[], object]) -> str:
    """Converge ``before``; then ``after`` under noop (nothing changes), for real (the
    probe changes), and again (nothing to do). Returns the real run's output."""
    ok(run(tmp, before))
    seen = probe()
    out = ok(run(tmp, after, "--noop"))
    assert "would change" in out, out
    assert probe() == seen, "--noop changed the account"
    out = ok(run(tmp, after))
    assert changed(out) >= 1, out
    assert probe() != seen
    again = ok(run(tmp, after))
    assert changed(again) == 0, again
    return out


def members(group: str) -> list[str]:
    return [m for m in group_file()[group][3].split(",") if m]


# -- user: each parameter ------------------------------------------------------------------


def test_uid_is_changed(tmp_path: Path, accounts: Accounts) -> None:
    name, a, b = accounts.name(), accounts.free_id(), accounts.free_id()
    out = cycle(
        tmp_path,
        entry("user", name, uid=a),
        entry("user", name, uid=b),
        lambda: passwd()[name][2],
    )
    assert passwd()[name][2] == str(b)
    assert f"uid {a} -> {b}" in out


def test_primary_group_is_changed_after_its_managed_group_is_made(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, grp, gid = accounts.name(), accounts.name(), accounts.free_id()
    group = entry("group", grp, gid=gid)
    cycle(
        tmp_path,
        entry("user", name),
        group + entry("user", name, group=grp),
        lambda: passwd()[name][3],
    )
    assert passwd()[name][3] == str(gid)


def test_supplementary_groups_are_added_and_others_kept(tmp_path: Path, accounts: Accounts) -> None:
    name, g1, g2 = accounts.name(), accounts.name(), accounts.name()
    groups = entry("group", g1) + entry("group", g2)
    cycle(
        tmp_path,
        groups + entry("user", name, groups=[g1]),
        groups + entry("user", name, groups=[g2]),
        lambda: (members(g1), members(g2)),
    )
    assert members(g1) == [name] and members(g2) == [name]


def test_exclusive_groups_take_the_user_out_of_the_others(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, g1, g2 = accounts.name(), accounts.name(), accounts.name()
    groups = entry("group", g1) + entry("group", g2)
    out = cycle(
        tmp_path,
        groups + entry("user", name, groups=[g1, g2]),
        groups + entry("user", name, groups=[g2], groups_exclusive=True),
        lambda: (members(g1), members(g2)),
    )
    assert members(g1) == [] and members(g2) == [name]
    assert f"-{g1}" in out


@pytest.mark.parametrize(
    ("field", "column", "before", "after"),
    [
        ("shell", 6, "/bin/sh", "/bin/bash"),
        ("comment", 4, "First Name", "Second Name"),
        ("home", 5, "/nonexistent", "/var/empty-cvt8"),
    ],
)
def test_text_fields_are_changed(
    tmp_path: Path, accounts: Accounts, field: str, column: int, before: str, after: str
) -> None:
    name = accounts.name()
    extra = {"create_home": False}
    cycle(
        tmp_path,
        entry("user", name, **{field: before}, **extra),
        entry("user", name, **{field: after}, **extra),
        lambda: passwd()[name][column],
    )
    assert passwd()[name][column] == after


def test_state_absent_removes_the_user(tmp_path: Path, accounts: Accounts) -> None:
    name = accounts.name()
    cycle(
        tmp_path, entry("user", name), entry("user", name, state="absent"), lambda: name in passwd()
    )
    assert name not in passwd()


def test_create_home_and_system_apply_at_creation(tmp_path: Path, accounts: Accounts) -> None:
    home, system = accounts.name(), accounts.name()
    where = tmp_path / "homes" / home
    where.parent.mkdir()
    body = entry("user", home, home=str(where), create_home=True) + entry(
        "user", system, system=True
    )
    out = ok(run(tmp_path, body, "--noop"))
    assert out.count("would change: created") == 2, out
    assert home not in passwd() and system not in passwd() and not where.exists()
    ok(run(tmp_path, body))
    assert where.is_dir() and where.stat().st_uid == int(passwd()[home][2])
    assert int(passwd()[system][2]) < 1000
    assert not Path(f"/home/{system}").exists()
    assert changed(ok(run(tmp_path, body))) == 0


# -- the password hash -----------------------------------------------------------------


def test_password_hash_is_set_and_never_shown(tmp_path: Path, accounts: Accounts) -> None:
    name = accounts.name()
    outputs = []
    for extra in ((), ("--log-format", "json")):
        done = run(tmp_path, entry("user", name, password_hash=HASH_A), *extra)
        outputs.append(done.stdout + done.stderr)
    assert shadow()[name][1] == HASH_A
    for args, stored in ((("--noop",), HASH_A), ((), HASH_B), (("--log-format", "json"), HASH_B)):
        done = run(tmp_path, entry("user", name, password_hash=HASH_B), *args)
        ok(done)
        outputs.append(done.stdout + done.stderr)
        assert shadow()[name][1] == stored, args
    assert changed(outputs[-1]) == 0
    assert "password hash changed" in outputs[3]
    for text in outputs:
        for secret in (HASH_A, HASH_B, "A" * 20, "B" * 20):
            assert secret not in text
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"A" * 20 not in data and b"B" * 20 not in data


# -- group ---------------------------------------------------------------------------------


def test_group_gid_is_changed(tmp_path: Path, accounts: Accounts) -> None:
    name, a, b = accounts.name(), accounts.free_id(), accounts.free_id()
    out = cycle(
        tmp_path,
        entry("group", name, gid=a),
        entry("group", name, gid=b),
        lambda: group_file()[name][2],
    )
    assert group_file()[name][2] == str(b) and f"gid {a} -> {b}" in out


def test_group_state_absent_and_system(tmp_path: Path, accounts: Accounts) -> None:
    name = accounts.name()
    cycle(
        tmp_path,
        entry("group", name, system=True),
        entry("group", name, state="absent"),
        lambda: name in group_file(),
    )
    assert name not in group_file()


def test_a_system_group_gets_a_system_gid(tmp_path: Path, accounts: Accounts) -> None:
    name = accounts.name()
    assert "would change: created" in ok(run(tmp_path, entry("group", name, system=True), "--noop"))
    assert name not in group_file()
    ok(run(tmp_path, entry("group", name, system=True)))
    assert int(group_file()[name][2]) < 1000


def test_a_tool_failure_is_reported_with_the_tools_own_message(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, grp = accounts.name(), accounts.name()
    ok(run(tmp_path, entry("group", grp) + entry("user", name, group=grp)))
    done = run(tmp_path, entry("group", grp, state="absent"))
    assert done.returncode != 0
    assert f"group[{grp}]" in done.stdout + done.stderr
    assert "groupdel" in done.stdout + done.stderr
    assert "primary group" in done.stdout + done.stderr
    assert grp in group_file()


# -- watching --------------------------------------------------------------------------


def test_a_user_removed_by_hand_is_recreated_by_a_running_agent(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, uid = accounts.name(), accounts.free_id()
    path = policy(tmp_path, entry("user", name, uid=uid, shell="/bin/sh", create_home=False))
    with Agent("run", str(path), "--state-dir", str(tmp_path / "state")) as agent:
        agent.wait_for_line(lambda line: f"user[{name}]: created" in line)
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=30)
        # The agent may have put it back before userdel returned: its next report says so.
        agent.wait_for_line(lambda line: f"user[{name}]: created" in line)
        assert passwd()[name][2] == str(uid)
        subprocess.run(["usermod", "-s", "/bin/bash", name], check=True, timeout=30)
        agent.wait_for_line(lambda line: f"user[{name}]" in line and "shell" in line)
        assert passwd()[name][6] == "/bin/sh"


# -- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ("  - user: cvt8bad\n    uid: -1\n", ":3:10:", "out of range"),
        ('  - user: "cvt8:x"\n', ":2:11:", "cannot contain ':'"),
        ("  - user: cvt8bad\n    shell: bin/sh\n", ":3:12:", "absolute path"),
        ("  - user: cvt8bad\n    groups: [wheel, 'a b']\n", ":3:", "cannot contain"),
        ("  - user: cvt8bad\n    state: absent\n    uid: 5\n", ":4:10:", "no meaning"),
        ("  - user: cvt8bad\n    password_hash: hunter2secret\n", ":3:20:", "crypt(3)"),
        ("  - group: cvt8bad\n    gid: 4294967295\n", ":3:10:", "out of range"),
        ("  - group: cvt8bad\n    system: maybe\n", ":3:13:", "expected bool"),
        ('  - user: "#cvt8bad"\n', ":2:11:", "cannot start with '#'"),
        ('  - user: "+cvt8bad"\n', ":2:11:", "cannot start with '+'"),
        ('  - group: "#cvt8bad"\n', ":2:12:", "cannot start with '#'"),
        ('  - user: cvt8bad\n    group: "\u00b2"\n', ":3:12:", "ASCII only"),
        ('  - user: cvt8bad\n    password_hash: "$6$"\n', ":3:20:", "crypt(3)"),
        ('  - user: cvt8bad\n    password_hash: "!$6$salt"\n', ":3:20:", "crypt(3)"),
        ("  - user: cvt8bad\n    home: /home/../etc/cvt8bad\n", ":3:11:", ". or .."),
        ('  - user: cvt8bad\n    shell: "/bin/sh\\n"\n', ":3:12:", "newline"),
        (
            "  - user: cvt8bad\n    uid: 4321\n  - user: cvt8bad2\n    uid: 4321\n",
            ":5:10:",
            "uid 4321 is also user[cvt8bad]'s (line 3)",
        ),
        (
            "  - group: cvt8bad\n    gid: 4321\n  - group: cvt8bad2\n    gid: 4321\n",
            ":5:10:",
            "gid 4321 is also group[cvt8bad]'s (line 3)",
        ),
    ],
)
def test_bad_values_are_refused_at_load_with_their_place(
    tmp_path: Path, body: str, where: str, words: str
) -> None:
    path = policy(tmp_path, body)
    done = run(tmp_path, body)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert f"{path}{where}" in text and words in text, text
    assert "hunter2" not in text
    assert "cvt8bad" not in passwd() and "cvt8bad" not in group_file()


def test_the_hash_is_given_on_stdin_never_as_an_argument(
    tmp_path: Path, accounts: Accounts
) -> None:
    """Arguments are readable by every user in /proc/PID/cmdline; stdin is not."""
    name = accounts.name()
    ok(run(tmp_path, entry("user", name, create_home=False)))
    ctx = Context(
        f"user[{name}]", ready=lambda: None, event=lambda: None, log=print, shared=lambda f: f()
    )
    for res in (User(name, password_hash=HASH_A), User(cvt8_new(), password_hash=HASH_A)):
        parts, commands = res._plan(ctx)
        assert commands and any(stdin and HASH_A.encode() in stdin for _, stdin in commands)
        assert not any(HASH_A in arg or "A" * 20 in arg for argv, _ in commands for arg in argv)
        assert not any("A" * 20 in part for part in parts)


def cvt8_new() -> str:
    """A name that is not created (the plan is only looked at)."""
    return "cvt8-never-made"


def test_a_run_killed_after_creating_the_user_sets_the_hash_next_time(
    tmp_path: Path, accounts: Accounts
) -> None:
    """Killed when /etc/passwd is replaced (useradd done, chpasswd maybe not): the next
    run reads the files again and sets what is missing."""
    name = accounts.name()
    path = policy(tmp_path, entry("user", name, password_hash=HASH_A, create_home=False))
    args = ("run", str(path), "--state-dir", str(tmp_path / "state"))
    with Inotify(Path("/etc"), IN_MOVED_TO) as events, Agent(*args) as agent:
        replaced = events.wait(
            lambda mask, name: name.startswith("passwd"), time.monotonic() + TIMEOUT
        )
        assert replaced is not None, f"/etc/passwd not replaced within {TIMEOUT} s"
        agent.send(signal.SIGKILL)
        agent.wait()
    ok(run(tmp_path, entry("user", name, password_hash=HASH_A, create_home=False)))
    assert shadow()[name][1] == HASH_A
    assert changed(ok(run(tmp_path, entry("user", name, password_hash=HASH_A)))) == 0


@needs_root
def test_changing_accounts_without_root_is_a_clear_error_before_any_tool_runs() -> None:
    def attempt() -> str:
        try:
            asyncio.run(accounts_host.run_tool(["useradd", "cvt8-never"], asyncio.Lock()))
        except accounts_host.ToolError as exc:
            return str(exc)
        return "ran"

    message = run_as_nobody(attempt)
    assert "needs root" in message and f"uid {NOBODY}" in message
    assert "cvt8-never" not in passwd()
