"""``kv``: set, change and delete a key in the state database, through the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from convergent.engine import Changed, Failed, WouldChange
from convergent.errors import ParamError
from convergent.resources.kv import Kv
from convergent.state import StateDB
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
    with StateDB(db_path, readonly=True) as db:
        return db.get_kv(key)


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


def test_kv_without_a_database_fails_saying_a_state_directory_is_needed() -> None:
    result, reports = converge(graph_of(Kv("greeting", value="hello")), None)
    assert result.failed == 1
    (failure,) = [r for r in reports if isinstance(r, Failed)]
    assert "state directory" in str(failure.error)


def test_kv_rejects_an_empty_key() -> None:
    with pytest.raises(ParamError) as info:
        Kv("k", key="", value="v")
    assert info.value.field == "key"
