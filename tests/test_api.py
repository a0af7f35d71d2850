"""``convergent.run``: the Python API runs a graph like ``convergent run`` does, with its
options (sema, state directory)."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from convergent import Converged, Failed, File, Graph, Resource, arun, run
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


def test_arun_converges_inside_a_running_loop_beside_other_tasks(tmp_path: Path) -> None:
    target = tmp_path / "f"

    async def main() -> tuple[int, int, str]:
        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(target), content="x\n"))
        other = asyncio.create_task(asyncio.sleep(0, result="other task ran"))
        result = await arun(g, converged_timeout=0, reporter=lambda report: None)
        return result.exit_code, result.changed, await other

    assert asyncio.run(main()) == (0, 1, "other task ran")
    assert target.read_text() == "x\n"


def test_cancelling_arun_stops_the_run_and_closes_the_state_database(tmp_path: Path) -> None:
    """A run without converged_timeout runs until cancelled; the state is closed after."""
    state_dir = tmp_path / "state"

    async def main() -> None:
        converged = asyncio.Event()

        def reporter(report: Report) -> None:
            if isinstance(report, Converged):
                converged.set()

        g: Graph[Resource[Any]] = Graph()
        g.add(File(str(tmp_path / "f"), content="x\n"))
        task = asyncio.create_task(arun(g, reporter=reporter, state_dir=str(state_dir)))
        async with asyncio.timeout(30):
            await converged.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # Closed: another run can open the same state directory and converge at once.
    again = run(
        _secret_graph(tmp_path / "secret"),
        converged_timeout=0,
        reporter=lambda report: None,
        state_dir=str(state_dir),
    )
    assert again.exit_code == 0


def test_the_api_imports_no_module_of_the_command_line(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from convergent import File, Graph, run
        g = Graph()
        g.add(File({str(tmp_path / "f")!r}, content="x\\n"))
        result = run(g, converged_timeout=0)
        print(sorted(m for m in sys.modules if m.startswith("convergent.cli")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [f"file[{tmp_path / 'f'}]: created", "[]"]


def test_an_error_met_through_the_api_gives_no_command_line_advice(tmp_path: Path) -> None:
    reports: list[Report] = []
    result = run(_secret_graph(tmp_path / "secret"), converged_timeout=0, reporter=reports.append)
    assert result.exit_code == 1
    failures = [str(r.error) for r in reports if isinstance(r, Failed)]
    assert failures and "state directory" in failures[0]
    for message in failures:
        assert "--" not in message and "convergent run" not in message, message


def test_a_busy_state_dir_met_through_the_api_names_no_command_line_option(
    tmp_path: Path,
) -> None:
    from convergent.state import StateError
    from convergent.state.statedir import open_state_dir

    state_dir = str(tmp_path / "state")
    held = open_state_dir(state_dir, mode="exclusive")
    try:
        with pytest.raises(StateError) as caught:
            run(Graph(), converged_timeout=0, state_dir=state_dir)
    finally:
        held.close()
    message = str(caught.value)
    assert "in use" in message and "use another state directory" in message
    assert "--" not in message and "convergent run" not in message, message
