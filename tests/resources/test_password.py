"""``password``: generated once, kept in the state database, never shown, regenerated on
refresh. Real engine runs against real SQLite files in tmp_path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Failed, Log, Report, WouldChange
from convergent.errors import ParamError, ResourceError
from convergent.render import TextRenderer
from convergent.resources.kv import Kv
from convergent.resources.password import CHARSETS, Password
from convergent.state import StateDB
from tests.state.support import converge, graph_of

ID = "password[db]"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def changed(reports: list[Report], resource: str = ID) -> list[str]:
    return [r.summary for r in reports if isinstance(r, Changed) and r.resource == resource]


def run_once(db_path: Path, *resources: Any, **kwargs: Any) -> list[Report]:
    """Converge ``resources`` once with a fresh StateDB on ``db_path``; no failure allowed."""
    with StateDB(db_path) as db:
        result, reports = converge(graph_of(*resources, **kwargs), db)
    assert result.exit_code == 0, reports
    return reports


def stored(db_path: Path, resource: str = ID) -> str | None:
    with StateDB(db_path, readonly=True) as db:
        return db.get_secret(resource)


def rendered(reports: list[Report]) -> str:
    """What the CLI prints for ``reports``, stdout and stderr together."""
    out, err = io.StringIO(), io.StringIO()
    renderer = TextRenderer(out, err, watching=True, color=False)
    for report in reports:
        renderer(report)
    return out.getvalue() + err.getvalue()


def test_password_is_generated_once_and_stable_across_runs(db_path: Path) -> None:
    first = Password("db")
    assert changed(run_once(db_path, first)) == ["generated"]
    secret = stored(db_path)
    assert secret is not None and len(secret) == 32
    assert set(secret) <= set(CHARSETS["alnum"])
    assert first.outputs() == {"password": secret}

    again = Password("db")  # a new agent process: only the database is shared
    assert changed(run_once(db_path, again)) == []
    assert stored(db_path) == secret
    assert again.outputs() == {"password": secret}


def test_passwords_of_different_resources_differ(db_path: Path) -> None:
    run_once(db_path, Password("a"), Password("b"))
    a, b = stored(db_path, "password[a]"), stored(db_path, "password[b]")
    assert a is not None and b is not None and a != b


def test_password_follows_length_and_charset(db_path: Path) -> None:
    run_once(db_path, Password("hex", length=12, charset="hex"), Password("ab", chars="abba"))
    hex_secret, ab_secret = stored(db_path, "password[hex]"), stored(db_path, "password[ab]")
    assert hex_secret is not None and len(hex_secret) == 12
    assert set(hex_secret) <= set("0123456789abcdef")
    assert ab_secret is not None and len(ab_secret) == 32 and set(ab_secret) <= {"a", "b"}


def test_password_is_regenerated_when_its_parameters_no_longer_fit(db_path: Path) -> None:
    run_once(db_path, Password("db", length=16))
    old = stored(db_path)
    reports = run_once(db_path, Password("db", length=20))
    assert changed(reports) == ["regenerated (the stored one does not fit length/charset)"]
    new = stored(db_path)
    assert new is not None and len(new) == 20 and new != old
    assert changed(run_once(db_path, Password("db", length=20))) == []


def test_password_is_regenerated_on_refresh(db_path: Path) -> None:
    def graph(trigger: str) -> tuple[Password, Kv]:
        return Password("db"), Kv("trigger", value=trigger)

    password, kv = graph("1")
    run_once(db_path, password, kv, notify=(("kv[trigger]", ID),))
    old = stored(db_path)

    password, kv = graph("1")  # the upstream did not change: no refresh
    reports = run_once(db_path, password, kv, notify=(("kv[trigger]", ID),))
    assert changed(reports) == [] and stored(db_path) == old

    password, kv = graph("2")
    reports = run_once(db_path, password, kv, notify=(("kv[trigger]", ID),))
    assert changed(reports) == ["regenerated"]
    new = stored(db_path)
    assert new is not None and new != old and len(new) == 32
    assert password.outputs() == {"password": new}


def test_password_never_appears_in_reports_or_output(db_path: Path) -> None:
    """Generate, keep, refresh, preview and fail: no report and no rendered line shows it."""
    notify = (("kv[trigger]", ID),)
    everything: list[Report] = []
    everything += run_once(db_path, Password("db"), Kv("trigger", value="1"), notify=notify)
    first = stored(db_path)
    everything += run_once(db_path, Password("db"), Kv("trigger", value="2"), notify=notify)
    second = stored(db_path)
    with StateDB(db_path, readonly=True) as db:
        graph = graph_of(Password("db", length=40), Kv("trigger", value="3"), notify=notify)
        _, previews = converge(graph, db, noop=True)
    everything += previews
    _, failures = converge(graph_of(Password("db")), None)  # no database: apply fails
    everything += failures

    assert first is not None and second is not None and first != second
    kinds = {type(r) for r in everything}
    assert {Changed, WouldChange, Failed} <= kinds
    texts = [repr(r) for r in everything] + [str(r) for r in everything] + [rendered(everything)]
    texts += [repr(Password("db")), str(Password("db"))]
    for text in texts:
        assert first not in text
        assert second not in text


def test_password_noop_without_a_database_would_generate(db_path: Path) -> None:
    result, reports = converge(graph_of(Password("db")), None, noop=True)
    assert result.exit_code == 0
    previews = [r for r in reports if isinstance(r, WouldChange)]
    assert [(r.resource, r.change and r.change.summary) for r in previews] == [
        (ID, "would generate")
    ]
    assert "password[db]: would generate" in rendered(reports)
    assert not db_path.parent.exists()


def test_password_noop_with_a_database_changes_nothing(db_path: Path) -> None:
    StateDB(db_path).close()
    before = db_path.read_bytes()
    with StateDB(db_path, readonly=True) as db:
        _, reports = converge(graph_of(Password("db")), db, noop=True)
    previews = [r.change.summary for r in reports if isinstance(r, WouldChange) and r.change]
    assert previews == ["generated"]
    assert db_path.read_bytes() == before
    assert stored(db_path) is None


def test_password_without_a_database_fails_saying_a_state_directory_is_needed() -> None:
    result, reports = converge(graph_of(Password("db")), None)
    assert result.failed == 1
    (failure,) = [r for r in reports if isinstance(r, Failed)]
    assert isinstance(failure.error, ResourceError) and failure.error.resource == ID
    assert "state directory" in str(failure.error)
    assert not [r for r in reports if isinstance(r, Log | Changed)]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"length": 7}, "length"),
        ({"length": 100_000}, "length"),
        ({"chars": "aaaa"}, "chars"),
        ({"chars": "ab\n"}, "chars"),
        ({"charset": "emoji"}, "charset"),
    ],
)
def test_password_rejects_weak_or_unknown_parameters(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ParamError) as info:
        Password("db", **fields)
    assert info.value.field == field
