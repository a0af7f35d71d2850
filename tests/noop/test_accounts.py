"""``--noop`` predicts the accounts ``user`` and ``group`` would leave: a ``file`` owned by
an account a ``user``/``group`` upstream would create is predicted exactly when the policy
gives its uid/gid, and *may* change (with the reason) when the tools would pick it. Each
test runs ``--noop`` and then the real run from the same state, with real accounts (root
only; removed at the end by :mod:`tests.resources.accounts_lab`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from convergent import File, Graph, Group, Resource, User
from tests.noop.support import noop_then_real
from tests.resources.accounts_lab import Accounts, accounts, needs_shadow

__all__ = ["accounts"]

pytestmark = needs_shadow


def test_a_file_owned_by_accounts_created_upstream_with_fixed_ids_would_change(
    tmp_path: Path, accounts: Accounts
) -> None:
    name, team = accounts.name(), accounts.name()
    uid, gid = accounts.free_id(), accounts.free_id()
    conf = tmp_path / "app.conf"
    conf.write_text("x\n")
    home = tmp_path / "home"
    user, group = f"user[{name}]", f"group[{team}]"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Group(team, gid=gid))
        g.add(User(name, uid=uid, group=team, home=str(home)), require=[group])
        g.add(File(str(conf), owner=name, group=team), require=[user, group])
        g.add(File(str(home / "notes"), content="hi\n", owner=name), require=[user])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    files = {f"file[{conf}]", f"file[{home}/notes]"}
    assert outcome.may == {}
    assert outcome.would == outcome.real == {user, group, *files}
    assert (conf.stat().st_uid, conf.stat().st_gid) == (uid, gid)


def test_a_file_owned_by_a_user_whose_uid_the_tools_pick_may_change(
    tmp_path: Path, accounts: Accounts
) -> None:
    name = accounts.name()
    conf = tmp_path / "app.conf"
    conf.write_text("x\n")
    user = f"user[{name}]"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(User(name, create_home=False))
        g.add(File(str(conf), owner=name), require=[user])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == {user}
    assert outcome.may == {
        f"file[{conf}]": f"the uid upstream {user} would give {name} is not known"
    }
    assert outcome.would <= outcome.real <= outcome.would | set(outcome.may)


def test_a_user_that_keeps_its_uid_predicts_its_files_exactly(
    tmp_path: Path, accounts: Accounts
) -> None:
    """An existing user changed upstream (its shell) keeps its uid: its files downstream
    are exact, and one already owned by it would not change."""
    name = accounts.name()
    uid = accounts.free_id()
    asyncio.run(_create(name, uid))
    owned, other = tmp_path / "owned", tmp_path / "other"
    owned.write_text("x\n")
    other.write_text("x\n")
    os.chown(owned, uid, -1)
    user = f"user[{name}]"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(User(name, shell="/bin/sh"))
        g.add(File(str(owned), owner=name), require=[user])
        g.add(File(str(other), owner=name), require=[user])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {user, f"file[{other}]"}


async def _create(name: str, uid: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        "useradd", "-M", "-u", str(uid), "-s", "/bin/false", "--", name
    )
    assert await asyncio.wait_for(proc.wait(), 30) == 0
