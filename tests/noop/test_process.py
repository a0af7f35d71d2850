"""``--noop`` predicts ``process``: it would start (or stop) and nothing else other kinds
read, so a file downstream of it stays exact; a refresh sent to a running process
"would restart" it. Real processes (``sleep``) recorded under the state directory in
tmp_path, killed by their recorded PID at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent import File, Graph, Resource
from convergent.engine.report import WouldChange
from convergent.resources.process import Process
from convergent.resources.procfiles import Store
from tests.noop.support import noop_then_real, run_once, then_a_file

APP = "process[app]"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[str]:
    """The state directory; the process recorded there is killed at the end."""
    path = str(tmp_path / "state")
    try:
        yield path
    finally:
        record = Store(path).read(APP) if os.path.isdir(path) else None
        if record is not None and record.pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)


def _pid(state: str) -> int:
    record = Store(state).read(APP)
    assert record is not None and record.pid > 0
    return record.pid


def test_a_file_downstream_of_a_starting_process_is_exact(tmp_path: Path, state: str) -> None:
    conf = tmp_path / "after.conf"
    app = Process("app", cmd=["sleep", "1000"])
    outcome = asyncio.run(noop_then_real(then_a_file(app, conf), state))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {APP, f"file[{conf}]"}


def test_a_refresh_to_a_running_process_would_restart_it(tmp_path: Path, state: str) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("v1\n")

    def graph(content: str) -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Process("app", cmd=["sleep", "1000"], restart_on_refresh=True))
        g.add(File(str(conf), content=content), notify=[APP])
        return g

    asyncio.run(run_once(lambda: graph("v1\n"), state))  # started, converged
    first = _pid(state)
    outcome = asyncio.run(noop_then_real(lambda: graph("v2\n"), state))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {f"file[{conf}]", APP}
    said = [r for r in outcome.noop_reports if isinstance(r, WouldChange) and r.resource == APP]
    assert said and said[0].change is not None
    assert said[0].change.summary == f"would restart on refresh (notified by file[{conf}])"
    assert _pid(state) != first  # the real run restarted it, as predicted


def test_a_refresh_without_restart_on_refresh_would_do_nothing(tmp_path: Path, state: str) -> None:
    conf = tmp_path / "app.conf"
    conf.write_text("v1\n")

    def graph(content: str) -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Process("app", cmd=["sleep", "1000"], restart_on_refresh=False))
        g.add(File(str(conf), content=content), notify=[APP])
        return g

    asyncio.run(run_once(lambda: graph("v1\n"), state))
    first = _pid(state)
    outcome = asyncio.run(noop_then_real(lambda: graph("v2\n"), state))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {f"file[{conf}]"}
    assert _pid(state) == first
