"""``file``'s ``check_now`` (``ChecksNow``): True exactly when its check finds nothing to
do, else the change its check would find (the pass in the task applies it); an error and
``purge`` are left to the check in the pass's task, so a run reports changes and errors as
before."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from convergent.engine import Changed, Engine, Failed, Report
from convergent.engine.events import Event, EventLog
from convergent.errors import ResourceError
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.resources.file import File
from tests.resources.test_file import context as _ctx

TIMEOUT = 10.0


def _both(resource: File) -> tuple[object, object]:
    """check_now, then what check says (its change, or the error it raises)."""
    now = resource.check_now(_ctx(resource))
    try:
        found: object = asyncio.run(resource.check(_ctx(resource)))
    except ResourceError as exc:
        found = exc
    return now, found


def test_check_now_is_true_exactly_when_the_check_finds_nothing_to_do(tmp_path: Path) -> None:
    right = tmp_path / "right"
    right.write_text("x\n")
    right.chmod(0o640)
    assert _both(File(str(right), content="x\n", mode="0640", owner=str(os.getuid()))) == (
        True,
        None,
    )
    for wrong in (
        File(str(right), content="y\n"),
        File(str(right), mode="0600"),
        File(str(right), owner=str(os.getuid() + 1)),
        File(str(tmp_path / "missing"), content="x\n"),
        File(str(right), state="absent"),
    ):
        now, found = _both(wrong)
        assert found is not None and not isinstance(found, Exception), wrong
        assert now == found, wrong  # the change the check finds, told at once


def test_check_now_never_raises_what_the_check_reports(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    (tmp_path / "plain").write_text("not a directory\n")
    failing: list[tuple[File, str]] = [
        (File(str(link), mode="0644"), "is a symlink"),
        (File(str(tmp_path / "plain" / "f"), content="x"), "is not a directory"),
        (File(str(target), content="keep\n", owner="no-such-user-here"), "owner"),
    ]
    for resource, says in failing:
        now, found = _both(resource)
        assert now is False
        assert isinstance(found, ResourceError) and says in str(found), found


def test_check_now_leaves_purge_to_the_check(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "dst").mkdir()
    tree = File(str(tmp_path / "dst"), state="directory", source=str(source), purge=True)
    assert tree.check_now(_ctx(tree)) is False
    assert asyncio.run(tree.check(_ctx(tree))) is None


def test_a_run_keeps_the_right_repairs_the_wrong_and_reports_the_failing(tmp_path: Path) -> None:
    """Through the real engine: the right file ends its first pass at once, the others
    are checked in their task and reported as before."""
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("r\n")
    wrong.write_text("old\n")
    (tmp_path / "other").write_text("o\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "other")
    graph: Graph[Resource[Any]] = Graph()
    for resource in (
        File(str(right), content="r\n"),
        File(str(wrong), content="new\n"),
        File(str(link), mode="0600"),
    ):
        graph.add(resource)
    reports: list[Report] = []
    events: list[Event] = []

    async def main() -> Any:
        engine = Engine(
            graph,
            reporter=reports.append,
            converged_timeout=0,
            events=EventLog("h", [events.append]),
        )
        return await asyncio.wait_for(engine.run(), TIMEOUT)

    result = asyncio.run(main())
    assert result.converged and result.changed == 1 and result.failed == 1
    assert wrong.read_text() == "new\n" and right.read_text() == "r\n" and link.is_symlink()
    changed = [r for r in reports if isinstance(r, Changed)]
    assert [(r.resource, r.summary) for r in changed] == [(f"file[{wrong}]", "content changed")]
    failed = [r for r in reports if isinstance(r, Failed)]
    assert [r.resource for r in failed] == [f"file[{link}]"]
    assert "is a symlink" in failed[0].message
    assert sorted((e.resource, e.outcome, e.cause) for e in events) == sorted(
        [
            (f"file[{right}]", "kept", "start-up"),
            (f"file[{wrong}]", "repaired", "start-up"),
            (f"file[{link}]", "failed", "start-up"),
        ]
    )


def test_check_now_reads_only(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("other\n")
    before = os.stat(target)
    resource = File(str(target), content="x\n", mode="0600")
    assert resource.check_now(_ctx(resource)) not in (True, False, None)  # a change
    after = os.stat(target)
    assert (before.st_mtime_ns, before.st_ino, before.st_mode) == (
        after.st_mtime_ns,
        after.st_ino,
        after.st_mode,
    )
    assert target.read_text() == "other\n"
