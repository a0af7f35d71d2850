"""``--noop`` predicts ``cron`` (its file in cron_dir, with the entry it writes) and
``svc`` (a unit's state, which no other kind reads; a refresh to a running unit "would
restart" it): what reads them downstream stays exact, and the real run does what the dry
run said.

``svc`` talks to the stand-in of systemd's D-Bus interface the svc tests use (systemd is
not PID 1 here: tests/resources/systemd_standin.py on a real private dbus-daemon)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from convergent import File, Graph, Resource
from convergent.engine.report import WouldChange
from convergent.resources.cron import Cron
from convergent.resources.svc import Svc
from tests.noop.support import noop_then_real, run_once, then_a_file
from tests.resources.test_svc import bus, with_standin  # noqa: F401 (the fixture)
from tests.support_dbus import PrivateBus

CRON = "cron[backup]"


def test_a_copy_of_a_cron_file_about_to_be_written_is_exact(tmp_path: Path) -> None:
    """The copy's content is the entry cron would write: *would* change, not *may*."""
    cron_dir, copy = tmp_path / "cron.d", tmp_path / "copy"
    cron_dir.mkdir()

    def graph() -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Cron("backup", cmd="/usr/local/bin/backup", hour="2", cron_dir=str(cron_dir)))
        g.add(File(str(copy), source=str(cron_dir / "backup")), require=[CRON])
        return g

    outcome = asyncio.run(noop_then_real(graph, str(tmp_path / "state")))
    assert outcome.may == {}
    assert outcome.would == outcome.real == {CRON, f"file[{copy}]"}
    assert copy.read_text() == (cron_dir / "backup").read_text()
    assert "2 * * * root /usr/local/bin/backup" in copy.read_text()


def test_a_file_downstream_of_a_starting_unit_is_exact(bus: PrivateBus, tmp_path: Path) -> None:  # noqa: F811
    conf = tmp_path / "after.conf"

    async def body(systemd: Any) -> Any:
        return await noop_then_real(then_a_file(Svc("web"), conf), str(tmp_path / "state"))

    outcome = with_standin(bus, ["web.service"], body)
    assert outcome.may == {}
    assert outcome.would == outcome.real == {"svc[web]", f"file[{conf}]"}


@pytest.mark.parametrize(("refresh", "said"), [("restart", "restart"), ("reload", "reload")])
def test_a_refresh_to_a_running_unit_would_restart_or_reload_it(
    bus: PrivateBus,  # noqa: F811
    tmp_path: Path,
    refresh: str,
    said: str,
) -> None:
    conf = tmp_path / "web.conf"
    conf.write_text("v1\n")
    state = str(tmp_path / "state")

    def graph(content: str) -> Graph[Resource[Any]]:
        g: Graph[Resource[Any]] = Graph()
        g.add(Svc("web", refresh=refresh))
        g.add(File(str(conf), content=content), notify=["svc[web]"])
        return g

    async def body(systemd: Any) -> Any:
        await run_once(lambda: graph("v1\n"), state)  # started, converged
        return await noop_then_real(lambda: graph("v2\n"), state)

    outcome = with_standin(bus, ["web.service"], body)
    assert outcome.may == {}
    assert outcome.would == outcome.real == {f"file[{conf}]", "svc[web]"}
    told = [
        r for r in outcome.noop_reports if isinstance(r, WouldChange) and r.resource == "svc[web]"
    ]
    assert told and told[0].change is not None
    assert told[0].change.summary == f"would {said} on refresh (notified by file[{conf}])"
