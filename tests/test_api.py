"""``convergent.run``: the Python API runs a graph like ``convergent run`` does, with its
options (sema, state directory)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from convergent import File, Graph, Resource, run
from convergent.engine import Report
from convergent.resources.password import Password
from convergent.state import StateDB
from tests.engine.probe import Box, Gauge, Probe


def _secret_graph(target: Path) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    g.add(Password("db"))
    g.add(File(str(target), mode="0600"), recv={"content": "password[db].password"})
    return g


def test_run_keeps_its_state_in_state_dir(tmp_path: Path) -> None:
    target, state_dir = tmp_path / "secret", tmp_path / "state"
    reports: list[Report] = []
    result = run(
        _secret_graph(target),
        converged_timeout=0,
        reporter=reports.append,
        state_dir=str(state_dir),
    )
    assert result.exit_code == 0 and result.changed == 2
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    with StateDB(state_dir / "state.db") as state:
        assert state.get_secret("password[db]") == target.read_text()
    # A second run finds the same secret there: nothing to change.
    again = run(
        _secret_graph(target),
        converged_timeout=0,
        reporter=reports.append,
        state_dir=str(state_dir),
    )
    assert again.exit_code == 0 and again.changed == 0


def test_run_under_noop_creates_no_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    result = run(
        _secret_graph(tmp_path / "secret"),
        converged_timeout=0,
        noop=True,
        reporter=lambda report: None,
        state_dir=str(state_dir),
    )
    assert result.exit_code == 0
    assert not state_dir.exists()
    assert not (tmp_path / "secret").exists()


def test_run_with_sema_1_applies_one_resource_at_a_time() -> None:
    gauge = Gauge()
    g: Graph[Resource[Any]] = Graph()
    for i in range(4):
        g.add(Probe.make(f"p{i}", Box(value="old", apply_seconds=0.01, gauges=[gauge])))
    result = run(g, converged_timeout=0, reporter=lambda report: None, sema=1)
    assert result.exit_code == 0 and result.changed == 4
    assert gauge.peak == 1
