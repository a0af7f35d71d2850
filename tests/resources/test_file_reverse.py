"""``file`` with ``meta: {reverse: true}`` is undone when it leaves a running graph: a file
it created is removed, a file it changed gets its content, mode and owner back."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from convergent.engine import Changed, Converged, Engine, Report, WouldChange
from convergent.graph import Graph
from convergent.resources.base import Meta, Resource
from convergent.resources.file import File
from convergent.state import StateDB
from tests.engine.support import BOUND, Recorder

REVERSE = Meta(reverse=True)


def _graph(*resources: Resource[Any]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for resource in resources:
        g.add(resource)
    return g


def _run_then_swap(
    first: Graph[Resource[Any]],
    *later: Graph[Resource[Any]],
    state: StateDB | None,
    noop: bool = False,
) -> list[Report]:
    """Run ``first`` to convergence, then swap in each of ``later`` in turn."""
    rec = Recorder()

    async def main() -> None:
        engine = Engine(first, reporter=rec, state=state, noop=noop)
        task = asyncio.create_task(engine.run())
        await rec.wait_for(lambda r: isinstance(r, Converged))
        for graph in later:
            mark = len(rec.reports)
            await asyncio.wait_for(engine.swap(graph), BOUND)
            await rec.wait_for(lambda r: isinstance(r, Converged), mark)
        engine.stop()
        await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    return rec.reports


def _lines(reports: list[Report]) -> list[str]:
    return [
        f"{r.resource}: {r.summary if isinstance(r, Changed) else r.change.summary}"
        for r in reports
        if isinstance(r, Changed | WouldChange) and r.change is not None
    ]


def test_a_file_it_created_is_removed_when_it_leaves_the_graph(tmp_path: Path) -> None:
    made, kept = tmp_path / "made", tmp_path / "kept"
    with StateDB(tmp_path / "state.db") as state:
        reports = _run_then_swap(
            _graph(File(str(made), content="x\n", meta=REVERSE), File(str(kept), content="k\n")),
            _graph(File(str(kept), content="k\n")),
            state=state,
        )
        assert state.get_reversal(f"file[{made}]") is None  # forgotten once undone
    assert not made.exists()
    assert kept.read_text() == "k\n"
    assert f"file[{made}]: reversed: removed" in _lines(reports)


def test_a_file_it_changed_gets_its_content_mode_and_owner_back(tmp_path: Path) -> None:
    path = tmp_path / "conf"
    path.write_text("original\n")
    os.chmod(path, 0o640)
    owner = path.stat().st_uid, path.stat().st_gid
    with StateDB(tmp_path / "state.db") as state:
        reports = _run_then_swap(
            _graph(File(str(path), content="first\n", mode="0600", meta=REVERSE)),
            _graph(File(str(path), content="second\n", mode="0600", meta=REVERSE)),
            _graph(),
            state=state,
        )
    assert path.read_text() == "original\n"  # the content before the first change
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert (path.stat().st_uid, path.stat().st_gid) == owner
    assert f"file[{path}]: reversed: restored content, mode and owner" in _lines(reports)


def test_a_removed_file_without_reverse_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "stays"
    with StateDB(tmp_path / "state.db") as state:
        reports = _run_then_swap(_graph(File(str(path), content="x\n")), _graph(), state=state)
    assert path.read_text() == "x\n"
    assert not any("reverse" in line for line in _lines(reports))


def test_under_noop_what_would_be_reversed_is_reported_and_nothing_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "made"
    db = tmp_path / "state.db"
    with StateDB(db) as state:
        _run_then_swap(_graph(File(str(path), content="x\n", meta=REVERSE)), state=state)
    with StateDB(db, readonly=True) as state:
        reports = _run_then_swap(
            _graph(File(str(path), content="x\n", meta=REVERSE)), _graph(), state=state, noop=True
        )
    assert path.read_text() == "x\n"
    assert _lines(reports) == [f"file[{path}]: would reverse: remove {path}"]
    with StateDB(db) as state:
        assert state.get_reversal(f"file[{path}]") == "created"


def test_a_file_that_was_already_right_has_nothing_to_reverse(tmp_path: Path) -> None:
    path = tmp_path / "right"
    path.write_text("x\n")
    with StateDB(tmp_path / "state.db") as state:
        reports = _run_then_swap(
            _graph(File(str(path), content="x\n", meta=REVERSE)), _graph(), state=state
        )
    assert path.read_text() == "x\n"
    assert _lines(reports) == []
