"""Reading through the prediction changes nothing: every noop run of ``tests/noop`` is
checked by a snapshot of the files and the state database before and after it
(``support.noop_then_real``); here the kinds not in the other tests (``line``, ``value``)
and the Python API's noop without a state directory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from convergent import File, Graph, Line, Resource, Value, arun
from convergent.engine.report import Report, WouldChange
from tests.noop.support import noop_then_real, snapshot


def test_a_line_in_a_file_that_would_be_created_is_predicted_and_nothing_written(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "app.conf"

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(conf), mode="0644"))
        g.add(Line("port", path=str(conf), match="^port=", text="port=8080"))  # after the file
        g.add(Value("port", content="8080"))
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.would == outcome.real == {f"file[{conf}]", "line[port]", "value[port]"}
    assert outcome.may == {}
    assert conf.read_text() == "port=8080\n"


def test_noop_without_a_state_dir_predicts_a_chain_and_writes_nothing(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    source.write_text("old\n")
    copy.write_text("old\n")
    g: Graph[Resource[Any]] = Graph()
    g.add(File(str(source), content="new\n"))
    g.add(File(str(copy), source=str(source)), require=[f"file[{source}]"])
    before = snapshot(tmp_path)
    reports: list[Report] = []
    asyncio.run(arun(g, converged_timeout=0, noop=True, reporter=reports.append))
    assert snapshot(tmp_path) == before
    would = {r.resource for r in reports if isinstance(r, WouldChange)}
    assert would == {f"file[{source}]", f"file[{copy}]"}
