"""``kv``: set, change and delete a key of this host's part of the world (in the state
database for the local world), through the real engine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from convergent.engine import Changed, WouldChange
from convergent.errors import ParamError
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.kv import Kv
from convergent.state import StateDB
from convergent.world import keys
from tests.state.support import converge, graph_of


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def apply(db_path: Path, kv: Kv) -> list[str]:
    """Converge ``kv`` once; return its change summaries."""
    with StateDB(db_path) as db:
        result, reports = converge(graph_of(kv), db)
    assert result.exit_code == 0, reports
    return [r.summary for r in reports if isinstance(r, Changed)]


def value(db_path: Path, key: str) -> str | None:
    """The value of this host's kv ``key`` in the state database."""
    with StateDB(db_path, readonly=True) as db:
        return db.get_kv(keys.kv_key(socket.gethostname(), key))


def test_kv_sets_changes_and_deletes_its_key(db_path: Path) -> None:
    kv = Kv("greeting", value="hello")
    assert apply(db_path, kv) == ["set"]
    assert value(db_path, "greeting") == "hello"
    assert kv.outputs() == {"value": "hello"}

    again = Kv("greeting", value="hello")
    assert apply(db_path, again) == []
    assert again.outputs() == {"value": "hello"}

    changed = Kv("greeting", value="bye")
    assert apply(db_path, changed) == ["changed"]
    assert value(db_path, "greeting") == "bye"
    assert changed.outputs() == {"value": "bye"}

    deleted = Kv("greeting")
    assert apply(db_path, deleted) == ["deleted"]
    assert value(db_path, "greeting") is None
    assert deleted.outputs() == {}
    assert apply(db_path, Kv("greeting")) == []


def test_kv_key_parameter_overrides_the_name(db_path: Path) -> None:
    assert apply(db_path, Kv("app settings", key="app/port", value="8080")) == ["set"]
    assert value(db_path, "app/port") == "8080"
    assert value(db_path, "app settings") is None


def test_kv_summaries_never_show_the_value(db_path: Path) -> None:
    with StateDB(db_path) as db:
        _, reports = converge(graph_of(Kv("token", value="tok-123456")), db)
    assert reports and all("tok-123456" not in repr(r) for r in reports)


def test_kv_noop_reports_and_writes_nothing(db_path: Path) -> None:
    apply(db_path, Kv("greeting", value="hello"))
    before = db_path.read_bytes()
    with StateDB(db_path, readonly=True) as db:
        result, reports = converge(graph_of(Kv("greeting", value="bye")), db, noop=True)
    assert result.exit_code == 0
    previews = [r.change.summary for r in reports if isinstance(r, WouldChange) and r.change]
    assert previews == ["changed"]
    assert db_path.read_bytes() == before
    assert value(db_path, "greeting") == "hello"


def test_kv_without_a_database_keeps_its_value_for_the_run() -> None:
    g = graph_of(Kv("greeting", value="hello"), Kv("copy", key="copy"))
    g.add_edge("kv[greeting]", "kv[copy]", recv={"value": "value"})
    result, reports = converge(g, None)
    assert result.exit_code == 0, reports
    changed = sorted((r.resource, r.summary) for r in reports if isinstance(r, Changed))
    assert changed == [("kv[copy]", "set"), ("kv[greeting]", "set")]


class IntruderParams(Params, frozen=True):
    """Writes ``value`` under ``key`` in the world once, as another writer would.

    key: the key
    value: what it writes
    """

    key: str
    value: str


class Intruder(Resource[IntruderParams], kind="kvtestintruder"):
    done: bool = False

    async def check(self, ctx: Context) -> Change | None:
        return None if self.done else Change("overwrite")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        await ctx.world.set(keys.kv_key(ctx.world.hostname, self.params.key), self.params.value)
        self.done = True
        return None


def test_kv_puts_its_value_back_when_another_writer_changes_it(db_path: Path) -> None:
    kv = Kv("greeting", value="hello")
    intruder = Intruder("i", key="greeting", value="tampered")
    g = graph_of(kv, intruder)
    g.add_edge("kv[greeting]", "kvtestintruder[i]")  # after kv has set its value
    with StateDB(db_path) as db:
        result, reports = converge(g, db)
    assert result.exit_code == 0, reports
    changes = [(r.resource, r.summary) for r in reports if isinstance(r, Changed)]
    assert changes == [
        ("kv[greeting]", "set"),
        ("kvtestintruder[i]", "overwrite"),
        ("kv[greeting]", "changed"),
    ]
    assert value(db_path, "greeting") == "hello"


def test_kv_rejects_an_empty_key() -> None:
    with pytest.raises(ParamError) as info:
        Kv("k", key="", value="v")
    assert info.value.field == "key"


def test_kv_keeps_its_key_under_this_host_s_prefix(db_path: Path) -> None:
    apply(db_path, Kv("greeting", value="hello"))
    with StateDB(db_path, readonly=True) as db:
        assert db.kv_prefix(keys.ROOT) == {
            f"/convergent/hosts/{socket.gethostname()}/kv/greeting": "hello"
        }


def test_kv_of_another_host_is_read_only() -> None:
    with pytest.raises(ParamError) as info:
        Kv("port-of-a", key="port", host="a", value="8080")
    assert info.value.field == "value" and "read only" in str(info.value)
    with pytest.raises(ParamError) as bad_host:
        Kv("port-of-a", host="a/b")
    assert bad_host.value.field == "host"
