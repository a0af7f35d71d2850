"""Automatic edges of accounts: a file owned by a managed user or group comes after it, a
user after its managed groups, a command run as a user after that user; and one run of
the real CLI converges a policy that lists them in the wrong order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convergent.graph import Graph
from convergent.graph.autoedge import plan_autoedges
from convergent.resources.base import Meta, Resource
from convergent.resources.exec import Exec
from convergent.resources.file import File
from convergent.resources.groupacct import Group
from convergent.resources.user import User
from tests.resources.accounts_lab import (
    Accounts,
    accounts,
    group_file,
    needs_shadow,
    passwd,
    run,
)

__all__ = ["accounts"]


def edges(*resources: Resource[Any]) -> set[tuple[str, str]]:
    g: Graph[Resource[Any]] = Graph()
    for res in resources:
        g.add(res)
    return {(e.source, e.target) for e in plan_autoedges(g).added}


def test_a_file_owned_by_a_managed_user_and_group_comes_after_them() -> None:
    found = edges(
        File("/srv/app", owner="app", group="staff"),
        User("app"),
        Group("staff"),
        File("/srv/other", owner="0", group="50"),
    )
    assert ("user[app]", "file[/srv/app]") in found
    assert ("group[staff]", "file[/srv/app]") in found
    assert not any(t == "file[/srv/other]" for _, t in found)


def test_numeric_owners_find_users_and_groups_with_those_ids() -> None:
    found = edges(
        File("/srv/a", owner="1500", group="1600"), User("app", uid=1500), Group("g", gid=1600)
    )
    assert {("user[app]", "file[/srv/a]"), ("group[g]", "file[/srv/a]")} <= found


def test_a_user_comes_after_its_managed_groups() -> None:
    found = edges(
        User("app", group="web", groups=["adm", "1700"]),
        Group("web"),
        Group("adm"),
        Group("x", gid=1700),
    )
    assert {
        ("group[web]", "user[app]"),
        ("group[adm]", "user[app]"),
        ("group[x]", "user[app]"),
    } <= found


def test_a_user_without_a_group_comes_after_the_group_named_after_it() -> None:
    assert ("group[app]", "user[app]") in edges(User("app"), Group("app"))


def test_a_command_run_as_a_user_comes_after_that_user_and_group() -> None:
    found = edges(Exec("job", cmd=["true"], user="app", group="web"), User("app"), Group("web"))
    assert {("user[app]", "exec[job]"), ("group[web]", "exec[job]")} <= found


def test_a_process_run_as_a_user_comes_after_that_user_group_and_its_directory() -> None:
    from convergent.resources.process import Process

    server = Process("web", cmd=["sleep", "60"], user="app", group="web", cwd="/srv/site")
    site = File("/srv/site", state="directory")
    found = edges(server, User("app"), Group("web"), site)
    assert {
        ("user[app]", "process[web]"),
        ("group[web]", "process[web]"),
        ("file[/srv/site]", "process[web]"),
    } <= found


def test_an_absent_account_provides_nothing_and_autoedge_false_opts_out() -> None:
    assert edges(File("/srv/a", owner="app"), User("app", state="absent")) == set()
    off = User("app", meta=Meta(autoedge=False))
    assert edges(File("/srv/a", owner="app"), off) == set()


@needs_shadow
def test_one_run_converges_files_and_users_listed_in_the_wrong_order(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, grp = accounts.name(), accounts.name()
    target = tmp_path / "owned"
    body = (
        f"  - file: {target}\n    content: hi\n    owner: {name}\n    group: {grp}\n"
        f"  - user: {name}\n    groups: [{grp}]\n    create_home: false\n"
        f"  - group: {grp}\n"
    )
    done = run(tmp_path, body)
    assert done.returncode == 0, done.stdout + done.stderr
    assert target.stat().st_uid == int(passwd()[name][2])
    assert target.stat().st_gid == int(group_file()[grp][2])
    assert group_file()[grp][3] == name


def test_a_service_comes_after_the_managed_file_or_package_that_holds_its_unit() -> None:
    from convergent.resources.svc import Svc

    unit = File("/etc/systemd/system/app.service", content="[Service]\nExecStart=/bin/true\n")
    found = edges(Svc("app"), unit)
    assert ("file[/etc/systemd/system/app.service]", "svc[app]") in found
