"""``host.dbus``: one connection per run to the system bus, bounded calls, clear errors,
signals by subscription, ``dbus_fast`` imported only when a call is made.

Against a real ``dbus-daemon`` started privately for the test (tests/support_dbus.py);
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from convergent.host.dbus import BusError, Signal, SystemBus, match_rule
from tests.support_dbus import PrivateBus, dbus_daemon, private_system_bus

BOUND = 10.0
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
T = TypeVar("T")

pytestmark = pytest.mark.skipif(dbus_daemon() is None, reason="dbus-daemon is not installed")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(make(), BOUND)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with private_system_bus(services=False) as private:
        yield private


def test_no_bus_says_where_it_looked(tmp_path: Any) -> None:
    missing = tmp_path / "system_bus_socket"

    async def go() -> None:
        system = SystemBus(f"unix:path={missing}")
        try:
            await system.call("org.freedesktop.DBus", "/", "org.freedesktop.DBus", "GetId")
        finally:
            await system.aclose()

    with pytest.raises(BusError) as caught:
        run(go)
    assert str(caught.value).startswith(f"no system bus at {missing}: No such file or directory")


def test_address_comes_from_the_environment(
    bus: PrivateBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)

    async def go() -> list[Any]:
        system = SystemBus()
        try:
            return await system.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId"
            )
        finally:
            await system.aclose()

    (bus_id,) = run(go)
    assert isinstance(bus_id, str) and len(bus_id) == 32


def test_one_connection_serves_every_call(bus: PrivateBus) -> None:
    async def go() -> tuple[bool, bool, int]:
        system = SystemBus(bus.address)
        try:
            first = await system.connection()
            known = await system.answers("org.freedesktop.DBus")
            unknown = await system.answers("org.example.NobodyHere")
            second = await system.connection()
            return known, unknown, int(first is second)
        finally:
            await system.aclose()

    assert run(go) == (True, False, 1)


def test_error_reply_names_the_call_and_the_error(bus: PrivateBus) -> None:
    async def go() -> None:
        system = SystemBus(bus.address)
        try:
            await system.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NoSuch"
            )
        finally:
            await system.aclose()

    with pytest.raises(BusError) as caught:
        run(go)
    assert caught.value.name == "org.freedesktop.DBus.Error.UnknownMethod"
    assert "org.freedesktop.DBus.NoSuch" in str(caught.value)


def test_a_call_nobody_answers_fails_after_its_timeout(bus: PrivateBus) -> None:
    """A service that owns its name but never replies: the call fails after its bound."""

    async def go() -> None:
        from dbus_fast import MessageType
        from dbus_fast.aio import MessageBus

        silent = await MessageBus(bus_address=bus.address).connect()
        # Swallow every call made to it, never replying.
        silent.add_message_handler(lambda m: m.message_type == MessageType.METHOD_CALL or None)
        await silent.request_name("org.example.Silent")
        system = SystemBus(bus.address)
        try:
            await system.call(
                "org.example.Silent", "/org/example", "org.example.Silent", "Hello", time_limit=0.2
            )
        finally:
            await system.aclose()
            silent.disconnect()

    with pytest.raises(BusError, match=r"org.example.Silent.Hello on /org/example did not answer"):
        run(go)


def test_subscribed_signals_arrive_and_stop_after_unsubscribe(bus: PrivateBus) -> None:
    async def go() -> tuple[list[Signal], int]:
        from dbus_fast import Message
        from dbus_fast.aio import MessageBus

        sender = await MessageBus(bus_address=bus.address).connect()
        system = SystemBus(bus.address)
        got: list[Signal] = []
        arrived = asyncio.Event()

        def on(signal: Signal) -> None:
            got.append(signal)
            arrived.set()

        try:
            stop = await system.subscribe(on, interface="org.example.Events", path="/org/example")
            for path in ("/elsewhere", "/org/example"):
                await sender.send(
                    Message.new_signal(path, "org.example.Events", "Changed", "as", [["a", "b"]])
                )
            await asyncio.wait_for(arrived.wait(), BOUND)
            stop()
            # A round trip through the bus after RemoveMatch: signals sent later are not ours.
            await system.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId"
            )
            await sender.send(
                Message.new_signal("/org/example", "org.example.Events", "Changed", "as", [["c"]])
            )
            await system.call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId"
            )
            return got, len(got)
        finally:
            await system.aclose()
            sender.disconnect()

    got, count = run(go)
    assert count == 1
    assert (got[0].path, got[0].member, got[0].body) == ("/org/example", "Changed", [["a", "b"]])


def test_closed_connection_refuses_calls(bus: PrivateBus) -> None:
    async def go() -> None:
        system = SystemBus(bus.address)
        await system.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId"
        )
        await system.aclose()
        await system.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId"
        )

    with pytest.raises(BusError, match="is closed"):
        run(go)


def test_match_rule_quotes_values() -> None:
    assert match_rule(type="signal", arg0="it's") == "type='signal',arg0='it'\\''s'"


def test_importing_the_module_does_not_import_dbus_fast() -> None:
    code = "import sys, convergent.host.dbus; print('dbus_fast' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert out.stdout.strip() == "False"
