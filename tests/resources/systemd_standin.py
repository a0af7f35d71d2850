"""A stand-in for systemd's D-Bus interface, for tests on a host where systemd is not PID 1.

It owns ``org.freedesktop.systemd1`` on a real (private) bus and implements, with
systemd's names and signatures, what ``svc`` uses: the manager object
``/org/freedesktop/systemd1`` (``org.freedesktop.systemd1.Manager``: ``GetUnit``,
``LoadUnit``, ``StartUnit``, ``StopUnit``, ``RestartUnit``, ``ReloadUnit``,
``ReloadOrRestartUnit``, ``EnableUnitFiles``, ``DisableUnitFiles``, ``GetUnitFileState``,
``Reload``, ``Subscribe``; the signals ``JobRemoved`` and ``UnitFilesChanged``) and one
object per unit (``/org/freedesktop/systemd1/unit/NAME_2eservice``,
``org.freedesktop.systemd1.Unit`` with ``Id``, ``LoadState``, ``ActiveState``,
``SubState``, whose changes are sent as ``PropertiesChanged`` like systemd does). Jobs
finish at once with result ``done``. Every call is recorded in ``calls``.

Like systemd, it sends the unit and job signals only while some connection is subscribed
(``Subscribe``), keeps one subscription per connection (a second ``Subscribe`` from the
same connection is ``AlreadySubscribed``) and forgets a connection's subscription when
that connection leaves the bus.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.service import (
    PropertyAccess,
    ServiceInterface,
    dbus_method,
    dbus_property,
    dbus_signal,
)

__all__ = ["Systemd", "start_standin", "unit_path"]

MANAGER_PATH = "/org/freedesktop/systemd1"


def unit_path(name: str) -> str:
    """systemd's object path for a unit (``bus_label_escape``: ``.`` -> ``_2e``)."""
    out = []
    for i, char in enumerate(name):
        if char.isascii() and (char.isalpha() or (char.isdigit() and i > 0)):
            out.append(char)
        else:
            out.append(f"_{ord(char):02x}")
    return f"{MANAGER_PATH}/unit/{''.join(out)}"


class Unit(ServiceInterface):
    def __init__(self, name: str, loaded: bool, heard: Callable[[], bool]) -> None:
        super().__init__("org.freedesktop.systemd1.Unit")
        self.heard = heard  # whether anyone is subscribed (else systemd sends nothing)
        self.unit_id = name  # not ``name``: ServiceInterface keeps its interface name there
        self.load = "loaded" if loaded else "not-found"
        self.active = "inactive"
        self.sub = "dead"
        self.file_state = "disabled" if loaded else ""

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:
        return self.unit_id

    @dbus_property(access=PropertyAccess.READ)
    def LoadState(self) -> DBusStr:
        return self.load

    @dbus_property(access=PropertyAccess.READ)
    def ActiveState(self) -> DBusStr:
        return self.active

    @dbus_property(access=PropertyAccess.READ)
    def SubState(self) -> DBusStr:
        return self.sub

    def set_active(self, active: str) -> None:
        """Change ActiveState and tell subscribers, as systemd does."""
        self.active = active
        self.sub = "running" if active == "active" else "dead"
        if self.heard():
            self.emit_properties_changed({"ActiveState": self.active, "SubState": self.sub})


class Systemd(ServiceInterface):
    """``org.freedesktop.systemd1.Manager``, with units ``known`` (any other is not-found)."""

    def __init__(self, bus: MessageBus, known: list[str]) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self.bus = bus
        self.known = set(known)
        self.units: dict[str, Unit] = {}
        self.calls: list[tuple[str, ...]] = []
        self.next_job = 1
        self.subscribers: set[str] = set()  # unique names of the subscribed connections
        self.subscriptions = 0  # Subscribe calls that succeeded
        self.subscribed = asyncio.Condition()  # notified at each of them
        self._caller = ""  # the sender of the method call being dispatched
        bus.add_message_handler(self._note_caller)

    def _note_caller(self, message: Message) -> None:
        """Remember who calls (the method itself is not told), and forget the
        subscription of a connection that left the bus."""
        if message.message_type == MessageType.METHOD_CALL:
            self._caller = message.sender or ""
        elif message.member == "NameOwnerChanged" and len(message.body) == 3:
            name, _, new_owner = message.body
            if not new_owner:
                self.subscribers.discard(name)

    def heard(self) -> bool:
        return bool(self.subscribers)

    async def wait_subscribed(self, times: int) -> None:
        """Return once ``Subscribe`` succeeded ``times`` times in all."""
        async with self.subscribed:
            await self.subscribed.wait_for(lambda: self.subscriptions >= times)

    def unit(self, name: str) -> Unit:
        found = self.units.get(name)
        if found is None:
            found = self.units[name] = Unit(name, name in self.known, self.heard)
            self.bus.export(unit_path(name), found)
        return found

    def _job(self, name: str, active: str | None) -> str:
        job_id = self.next_job
        self.next_job += 1
        path = f"{MANAGER_PATH}/job/{job_id}"
        unit = self.unit(name)
        if unit.load != "loaded":
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not found.")

        def finish() -> None:
            if active is not None and unit.active != active:
                unit.set_active(active)
            if self.heard():
                self.JobRemoved(job_id, path, name, "done")

        asyncio.get_running_loop().call_soon(finish)  # after the reply, as systemd does
        return path

    @dbus_method()
    def GetUnit(self, name: DBusStr) -> DBusObjectPath:
        self.calls.append(("GetUnit", name))
        if name not in self.units:
            raise DBusError("org.freedesktop.systemd1.NoSuchUnit", f"Unit {name} not loaded.")
        return unit_path(name)

    @dbus_method()
    def LoadUnit(self, name: DBusStr) -> DBusObjectPath:
        self.calls.append(("LoadUnit", name))
        self.unit(name)
        return unit_path(name)

    @dbus_method()
    def StartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.calls.append(("StartUnit", name, mode))
        return self._job(name, "active")

    @dbus_method()
    def StopUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.calls.append(("StopUnit", name, mode))
        return self._job(name, "inactive")

    @dbus_method()
    def RestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.calls.append(("RestartUnit", name, mode))
        return self._job(name, "active")

    @dbus_method()
    def ReloadUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.calls.append(("ReloadUnit", name, mode))
        return self._job(name, None)

    @dbus_method()
    def ReloadOrRestartUnit(self, name: DBusStr, mode: DBusStr) -> DBusObjectPath:
        self.calls.append(("ReloadOrRestartUnit", name, mode))
        return self._job(name, "active")

    @dbus_method()
    def EnableUnitFiles(
        self, files: Annotated[list[str], DBusSignature("as")], runtime: DBusBool, force: DBusBool
    ) -> Annotated[list[object], DBusSignature("ba(sss)")]:
        self.calls.append(("EnableUnitFiles", *files))
        changes = []
        for name in files:
            self.unit(name).file_state = "enabled"
            link = f"/etc/systemd/system/multi-user.target.wants/{name}"
            changes.append(["symlink", link, f"/lib/systemd/system/{name}"])
        self.UnitFilesChanged()
        return [True, changes]

    @dbus_method()
    def DisableUnitFiles(
        self, files: Annotated[list[str], DBusSignature("as")], runtime: DBusBool
    ) -> Annotated[list[list[str]], DBusSignature("a(sss)")]:
        self.calls.append(("DisableUnitFiles", *files))
        changes = []
        for name in files:
            self.unit(name).file_state = "disabled"
            changes.append(["unlink", f"/etc/systemd/system/multi-user.target.wants/{name}", ""])
        self.UnitFilesChanged()
        return changes

    @dbus_method()
    def GetUnitFileState(self, name: DBusStr) -> DBusStr:
        self.calls.append(("GetUnitFileState", name))
        unit = self.unit(name)
        if unit.load != "loaded":
            raise DBusError("org.freedesktop.DBus.Error.FileNotFound", f"No such file {name}")
        return unit.file_state

    @dbus_method()
    def Reload(self):  # type: ignore[no-untyped-def]  # no annotation: no D-Bus reply body
        self.calls.append(("Reload",))

    @dbus_method()
    def Subscribe(self):  # type: ignore[no-untyped-def]
        self.calls.append(("Subscribe",))
        if self._caller in self.subscribers:  # systemd refuses a second one per connection
            raise DBusError(
                "org.freedesktop.systemd1.AlreadySubscribed", "Client is already subscribed."
            )
        self.subscribers.add(self._caller)
        self.subscriptions += 1
        asyncio.get_running_loop().create_task(self._tell_subscribed())

    async def _tell_subscribed(self) -> None:
        async with self.subscribed:
            self.subscribed.notify_all()

    @dbus_signal()
    def JobRemoved(
        self, job_id: int, job: str, unit: str, result: str
    ) -> Annotated[list[object], DBusSignature("uoss")]:
        return [job_id, job, unit, result]

    @dbus_signal()
    def UnitFilesChanged(self):  # type: ignore[no-untyped-def]
        return None

    def count(self, member: str) -> int:
        return sum(1 for call in self.calls if call[0] == member)


async def start_standin(address: str, known: list[str]) -> tuple[MessageBus, Systemd]:
    """Connect to the bus at ``address``, export the manager, own systemd's name."""
    bus = await MessageBus(bus_address=address).connect()
    manager = Systemd(bus, known)
    bus.export(MANAGER_PATH, manager)
    await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"],
        )
    )
    reply = await bus.request_name("org.freedesktop.systemd1")
    assert reply.value == 1, f"could not own org.freedesktop.systemd1: {reply}"
    return bus, manager
