"""``svc`` through systemd's D-Bus API.

systemd is not PID 1 on the machines these tests run on, so every test here talks to a
stand-in of systemd's D-Bus interface (tests/resources/systemd_standin.py: the manager's
methods and signals svc uses, and the unit objects' properties, with systemd's names and
signatures) exported with dbus-fast on a real private ``dbus-daemon`` the test starts
(tests/support_dbus.py); svc's PID-1 probe is replaced for them. The engine, the bus
connection, the signals and the calls are all real. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from convergent.engine import Changed, Converged, Engine, Failed, RunResult
from convergent.graph import Graph
from convergent.host.dbus import SystemBus
from convergent.resources import svc
from convergent.resources.base import Resource
from convergent.resources.file import File
from convergent.resources.svc import Svc
from tests.engine.support import Recorder
from tests.support_dbus import PrivateBus, dbus_daemon, private_system_bus

pytest.importorskip("dbus_fast")
pytestmark = pytest.mark.skipif(dbus_daemon() is None, reason="dbus-daemon is not installed")

from tests.resources.systemd_standin import Systemd, start_standin  # noqa: E402

BOUND = 10.0
T = TypeVar("T")


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[PrivateBus]:
    with private_system_bus(services=False) as private:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private.address)
        monkeypatch.setattr(svc, "probe_init", lambda: None)
        yield private


def with_standin(bus: PrivateBus, known: list[str], body: Callable[[Systemd], Awaitable[T]]) -> T:
    async def go() -> T:
        connection, manager = await start_standin(bus.address, known)
        try:
            async with asyncio.timeout(BOUND):
                return await body(manager)
        finally:
            connection.disconnect()

    return asyncio.run(go())


async def converge(graph: Graph[Resource[Any]], rec: Recorder) -> RunResult:
    return await Engine(graph, converged_timeout=0, reporter=rec).run()


def graph(*resources: Resource[Any]) -> Graph[Resource[Any]]:
    g: Graph[Resource[Any]] = Graph()
    for res in resources:
        g.add(res)
    return g


def changes(rec: Recorder, rid: str) -> list[str]:
    return [r.summary for r in rec.of(Changed) if r.resource == rid]  # type: ignore[union-attr]


def test_a_stopped_unit_is_enabled_and_started_and_then_left_alone(bus: PrivateBus) -> None:
    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        result = await converge(graph(Svc("web", startup="enabled")), rec)
        assert result.exit_code == 0, [str(getattr(r, "error", r)) for r in rec.reports]
        assert changes(rec, "svc[web]") == ["enabled, started"]
        unit = systemd.units["web.service"]
        assert (unit.active, unit.file_state) == ("active", "enabled")
        assert ("StartUnit", "web.service", "replace") in systemd.calls
        assert systemd.count("Reload") == 1 and systemd.subscriptions == 1
        again = Recorder()
        await converge(graph(Svc("web", startup="enabled")), again)
        assert changes(again, "svc[web]") == []

    with_standin(bus, ["web.service"], body)


def test_a_running_unit_is_stopped_and_disabled(bus: PrivateBus) -> None:
    async def body(systemd: Systemd) -> None:
        unit = systemd.unit("db.service")
        unit.active, unit.file_state = "active", "enabled"
        rec = Recorder()
        await converge(graph(Svc("db.service", state="stopped", startup="disabled")), rec)
        assert changes(rec, "svc[db.service]") == ["disabled, stopped"]
        assert (unit.active, unit.file_state) == ("inactive", "disabled")
        assert ("StopUnit", "db.service", "replace") in systemd.calls

    with_standin(bus, ["db.service"], body)


@pytest.mark.parametrize(
    ("refresh", "member", "summary"),
    [
        ("restart", "RestartUnit", "restarted"),
        ("reload", "ReloadUnit", "reloaded"),
        ("reload-or-restart", "ReloadOrRestartUnit", "reloaded or restarted"),
    ],
)
def test_a_notification_restarts_or_reloads_the_unit(
    bus: PrivateBus, tmp_path: Path, refresh: str, member: str, summary: str
) -> None:
    async def body(systemd: Systemd) -> None:
        systemd.unit("web.service").active = "active"
        g: Graph[Resource[Any]] = Graph()
        conf = g.add(File(str(tmp_path / "web.conf"), content="port 80\n"))
        g.add(Svc("web", refresh=refresh), require=[conf])
        g.add_edge(conf.id, "svc[web]", notify=True)
        rec = Recorder()
        await converge(g, rec)
        assert changes(rec, "svc[web]") == [summary]
        assert systemd.count(member) == 1 and systemd.count("StartUnit") == 0

    with_standin(bus, ["web.service"], body)


def test_a_unit_stopped_by_hand_is_started_again_at_once(bus: PrivateBus) -> None:
    """The stand-in stops the unit and sends PropertiesChanged, as systemd does after
    ``systemctl stop``: the running agent hears it and starts the unit again."""

    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        engine = Engine(graph(Svc("web")), reporter=rec)
        run = asyncio.create_task(engine.run())
        try:
            await rec.wait_for(lambda r: isinstance(r, Converged), bound=BOUND)
            assert systemd.count("StartUnit") == 1
            mark = len(rec.reports)
            systemd.units["web.service"].set_active("inactive")
            await rec.wait_for(
                lambda r: isinstance(r, Changed) and r.resource == "svc[web]",
                start=mark,
                bound=BOUND,
            )
            assert systemd.count("StartUnit") == 2
            assert systemd.units["web.service"].active == "active"
        finally:
            engine.stop()
            await asyncio.wait_for(run, BOUND)

    with_standin(bus, ["web.service"], body)


def test_a_lost_bus_connection_is_made_again_and_drift_after_it_is_repaired(
    bus: PrivateBus,
) -> None:
    """The agent's bus connection drops (closed under it, as when dbus-daemon drops a
    client): systemd forgets that connection's subscription and would signal nobody. The
    agent connects again, subscribes again, and a unit stopped afterwards is started."""

    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        engine = Engine(graph(Svc("web")), reporter=rec)
        run = asyncio.create_task(engine.run())
        try:
            await rec.wait_for(lambda r: isinstance(r, Converged), bound=BOUND)
            await systemd.wait_subscribed(1)
            connection = engine.shared(SystemBus)._bus
            assert connection is not None
            connection.disconnect()
            await systemd.wait_subscribed(2)
            mark = len(rec.reports)
            systemd.units["web.service"].set_active("inactive")
            await rec.wait_for(
                lambda r: isinstance(r, Changed) and r.resource == "svc[web]",
                start=mark,
                bound=BOUND,
            )
            assert systemd.units["web.service"].active == "active"
            assert not rec.of(Failed)
        finally:
            engine.stop()
            await asyncio.wait_for(run, BOUND)

    with_standin(bus, ["web.service"], body)


def test_several_units_share_one_subscription(bus: PrivateBus) -> None:
    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        result = await converge(graph(Svc("a"), Svc("b"), Svc("c", state="stopped")), rec)
        assert result.exit_code == 0, [str(getattr(r, "error", r)) for r in rec.reports]
        assert systemd.count("Subscribe") == 1
        assert systemd.units["a.service"].active == systemd.units["b.service"].active == "active"

    with_standin(bus, ["a.service", "b.service", "c.service"], body)


def test_an_unknown_unit_fails_naming_it(bus: PrivateBus) -> None:
    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        result = await converge(graph(Svc("nope")), rec)
        assert result.exit_code != 0
        (failed,) = rec.of(Failed)
        assert "nope.service is not-found (is its package installed?)" in str(failed.error)  # type: ignore[union-attr]

    with_standin(bus, [], body)


def test_without_systemd_as_pid_1_svc_fails_before_its_first_check(
    bus: PrivateBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(svc, "probe_init", lambda: "process_api")

    async def body(systemd: Systemd) -> None:
        rec = Recorder()
        result = await converge(graph(Svc("web")), rec)
        assert result.exit_code != 0
        (failed,) = rec.of(Failed)
        assert "svc needs systemd (PID 1 is process_api)" in str(failed.error)  # type: ignore[union-attr]
        assert systemd.calls == []

    with_standin(bus, ["web.service"], body)


def test_the_pid_1_probe_names_what_runs_as_pid_1() -> None:
    found = svc.init_name()
    if Path("/run/systemd/system").is_dir():
        assert found is None
    else:
        assert found == Path("/proc/1/comm").read_text().strip()
