"""The ``cron`` kind: real cron.d files (in tmp_path, and once in the real /etc/cron.d),
schedules checked at load, drift put back, noop inert."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, WouldChange
from convergent.errors import ParamError, PolicyError
from convergent.graph import Graph
from convergent.policy import load_policy_text
from convergent.resources.base import Resource
from convergent.resources.cron import Cron
from tests.resources.kinds import Reports, converge, engine_run

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="cron.d files belong to root")


def cron(tmp_path: Path, name: str = "backup", **fields: Any) -> Cron:
    fields.setdefault("cmd", "/usr/local/bin/backup --quiet")
    return Cron(name, cron_dir=str(tmp_path), **fields)


@needs_root
def test_the_entry_is_written_as_a_root_owned_0644_file(tmp_path: Path) -> None:
    change = converge(
        cron(
            tmp_path,
            minute="30",
            hour="2",
            weekday="mon-fri",
            user="nobody",
            env={"MAILTO": "ops@example.org", "PATH": "/usr/bin:/bin"},
        )
    )
    assert change is not None and change.summary == "created"
    target = tmp_path / "backup"
    assert target.read_text() == (
        "# convergent: cron[backup]; changes made here are put back\n"
        "MAILTO=ops@example.org\n"
        "PATH=/usr/bin:/bin\n"
        "30 2 * * mon-fri nobody /usr/local/bin/backup --quiet\n"
    )
    st = target.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup"]


@needs_root
def test_special_replaces_the_five_fields(tmp_path: Path) -> None:
    converge(cron(tmp_path, special="reboot", cmd="echo up"))
    assert (tmp_path / "backup").read_text().splitlines()[-1] == "@reboot root echo up"


@needs_root
def test_a_changed_schedule_rewrites_the_entry_with_a_diff(tmp_path: Path) -> None:
    converge(cron(tmp_path, minute="0"))
    change = converge(cron(tmp_path, minute="*/15"))
    assert change is not None and change.summary == "entry changed"
    assert change.diff is not None
    assert "-0 * * * * root" in change.diff and "+*/15 * * * * root" in change.diff


@needs_root
def test_mode_and_owner_drift_is_corrected_without_rewriting(tmp_path: Path) -> None:
    """Drift only root could have made is put right in place; a file another user may
    have written (hers, or writable by others) is replaced: her open descriptor would
    keep writing lines root's cron runs (tests/attack/test_setuid_in_place.py)."""
    converge(cron(tmp_path))
    target = tmp_path / "backup"
    inode = target.stat().st_ino
    target.chmod(0o600)
    os.chown(target, 0, 65534)
    change = converge(cron(tmp_path))
    assert change is not None
    assert change.summary == "mode 0600 -> 0644, owner 0:65534 -> 0:0"
    assert target.stat().st_ino == inode
    target.chmod(0o666)
    os.chown(target, 65534, 65534)
    change = converge(cron(tmp_path))
    assert change is not None
    assert change.summary == (
        "mode 0666 -> 0644, owner 65534:65534 -> 0:0 (a new file: it belongs to uid 65534)"
    )
    assert target.stat().st_ino != inode


def test_absent_removes_the_file_and_a_missing_one_needs_nothing(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("* * * * * root true\n")
    change = converge(Cron("old", state="absent", cron_dir=str(tmp_path)))
    assert change is not None and change.summary == "removed"
    assert not (tmp_path / "old").exists()


@needs_root
def test_a_missing_cron_dir_is_created(tmp_path: Path) -> None:
    converge(cron(tmp_path / "cron.d"))
    assert (tmp_path / "cron.d" / "backup").is_file()


@needs_root
def test_a_file_removed_or_edited_by_hand_is_put_back(tmp_path: Path) -> None:
    graph: Graph[Resource[Any]] = Graph()
    graph.add(cron(tmp_path, minute="5"))
    target = tmp_path / "backup"

    async def drift(reports: Reports) -> None:
        wanted = target.read_bytes()
        for action, summary in (
            (target.unlink, "created"),
            (lambda: target.write_text("* * * * * root rm -rf /tmp/x\n"), "entry changed"),
        ):
            mark = len(reports.items)
            action()
            changed = await reports.next(Changed, mark)
            assert changed.summary == summary
            await reports.next(Converged, mark)
            assert target.read_bytes() == wanted

    result, _ = engine_run(graph, during=drift)
    assert result.failed == 0
    again, reports = engine_run(graph)
    assert again.changed == 0 and not any(isinstance(r, Changed) for r in reports.items)


def test_noop_reports_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "gone").write_text("@daily root true\n")
    graph: Graph[Resource[Any]] = Graph()
    graph.add(cron(tmp_path, name="new", hour="3"))
    graph.add(Cron("gone", state="absent", cron_dir=str(tmp_path)))
    result, reports = engine_run(graph, noop=True)
    assert result.failed == 0
    would = {
        r.resource: r.change.summary
        for r in reports.items
        if isinstance(r, WouldChange) and r.change is not None
    }
    assert would == {"cron[new]": "created", "cron[gone]": "removed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"minute": "60"}, "minute", "'60': 60 is out of range; minute takes 0-59"),
        ({"hour": "24"}, "hour", "hour takes 0-23"),
        ({"day": "0"}, "day", "day takes 1-31 (day of the month)"),
        ({"month": "13"}, "month", "month takes 1-12 or jan-dec"),
        ({"weekday": "8"}, "weekday", "weekday takes 0-7 (0 and 7 are Sunday) or sun-sat"),
        ({"weekday": "fry"}, "weekday", "'fry' is not a number"),
        ({"minute": "*/0"}, "minute", "the step '0' must be a number of 1 or more"),
        ({"minute": "5/10"}, "minute", "a step follows * or a range: write 5-59/10"),
        ({"hour": "20-4"}, "hour", "the range 20-4 runs backwards"),
        ({"minute": "1, 2"}, "minute", "one field without spaces"),
        ({"minute": "1,,2"}, "minute", "'' is not a number"),
        ({"special": "daily", "hour": "1"}, "hour", "special: daily replaces the five fields"),
        ({"cmd": "a\nb"}, "cmd", "a cron entry is one line"),
        ({"cmd": None}, "cmd", "needs the command"),
        ({"user": "a b"}, "user", "not a user name"),
        ({"env": {"A-B": "x"}}, "env.A-B", "a variable name is letters"),
        ({"env": {"A": "x\ny"}}, "env.A", "a value is one line"),
        ({"cron_dir": "etc/cron.d"}, "cron_dir", "absolute path"),
    ],
)
def test_bad_values_are_rejected_naming_the_field_and_range(
    fields: dict[str, Any], field: str, message: str
) -> None:
    fields.setdefault("cmd", "true")
    if fields["cmd"] is None:
        del fields["cmd"]
    with pytest.raises(ParamError) as caught:
        Cron("job", **fields)
    assert caught.value.field == field
    assert message in caught.value.message


@needs_root
@pytest.mark.parametrize(
    ("minute", "hour", "day", "month", "weekday"),
    [("*/5", "0-23/2", "1,15,31", "jan-mar,oct", "mon-fri"), ("0", "*", "*", "*/3", "7")],
)
def test_cron_syntax_with_ranges_steps_lists_and_names_is_accepted(
    tmp_path: Path, minute: str, hour: str, day: str, month: str, weekday: str
) -> None:
    job = cron(tmp_path, minute=minute, hour=hour, day=day, month=month, weekday=weekday)
    converge(job)
    entry = (tmp_path / "backup").read_text().splitlines()[-1]
    assert entry.startswith(f"{minute} {hour} {day} {month} {weekday} root ")


def test_a_name_cron_would_ignore_is_refused_with_a_valid_one_suggested() -> None:
    with pytest.raises(ParamError, match=r"rename the resource, e\.g\. to 'nightly-backup-sh'"):
        Cron("nightly backup.sh", cmd="true")


def test_a_name_too_long_for_a_file_is_refused() -> None:
    with pytest.raises(ParamError, match="200 characters or fewer"):
        Cron("x" * 201, cmd="true")


def test_a_bad_field_is_refused_at_load_with_its_location() -> None:
    text = 'resources:\n  - cron: job\n    cmd: "true"\n    minute: "61"\n'
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "site.yaml")
    assert str(caught.value) == (
        "site.yaml:4:13: cron[job]: minute: '61': 61 is out of range; minute takes 0-59"
    )


@needs_root
def test_the_real_etc_cron_d_gets_the_file_and_loses_it_again() -> None:
    name = f"convergent-test-{os.getpid()}"
    target = Path("/etc/cron.d") / name
    made_dir = not target.parent.exists()
    try:
        change = converge(Cron(name, special="hourly", cmd="true"))
        assert change is not None and change.summary == "created"
        assert target.read_text().endswith("@hourly root true\n")
        st = target.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o644, 0, 0)
        converge(Cron(name, state="absent"))
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)
        if made_dir:
            target.parent.rmdir()
