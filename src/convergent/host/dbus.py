"""The one way kinds talk to the system D-Bus: one connection per run, bounded calls.

Kinds get the run's connection with ``ctx.shared(SystemBus)``; the engine closes it at
the end of the run (``aclose()``). Nothing connects until the first call, and
``dbus_fast`` is imported only then: a run without a D-Bus kind never pays for it.

    bus = ctx.shared(SystemBus)
    (owner,) = await bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "GetNameOwner", "s", ["org.x"])

- The address is ``DBUS_SYSTEM_BUS_ADDRESS`` when set (a test's private bus), else
  ``unix:path=/run/dbus/system_bus_socket``.
- Connecting is bounded by ``CONNECT_TIMEOUT`` and a call by its ``time_limit``
  (``CALL_TIMEOUT`` by default); failures raise :class:`BusError` saying what was
  called, on which bus, and what answered: ``no system bus at
  /run/dbus/system_bus_socket: No such file or directory``, ``org.freedesktop.PackageKit:
  ...Resolve did not answer within 25 s``, or the error name and text of an error reply.
- A connection that was lost (the bus daemon restarted) is made again at the next call;
  subscriptions (:meth:`SystemBus.subscribe`) are renewed on the new connection.
- Values come back as plain Python values: variants are unwrapped (:func:`plain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from convergent.errors import ConvergentError

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

__all__ = [
    "CALL_TIMEOUT",
    "CONNECT_TIMEOUT",
    "SYSTEM_BUS_SOCKET",
    "BusError",
    "Signal",
    "SystemBus",
    "bus_address",
    "match_rule",
    "plain",
    "variant",
]

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
CONNECT_TIMEOUT = 5.0  # seconds to connect and authenticate
CALL_TIMEOUT = 25.0  # seconds a call may take by default (D-Bus's own default)

_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


class BusError(ConvergentError):
    """A D-Bus connection or call failed. ``name`` is the D-Bus error name of an error
    reply (``org.freedesktop.DBus.Error.ServiceUnknown``), else None."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class Signal:
    """A signal received through :meth:`SystemBus.subscribe`: who sent it, from which
    object and interface, its member name and its body as plain values."""

    __slots__ = ("body", "interface", "member", "path", "sender")

    def __init__(
        self, sender: str, path: str, interface: str, member: str, body: list[Any]
    ) -> None:
        self.sender = sender
        self.path = path
        self.interface = interface
        self.member = member
        self.body = body

    def __repr__(self) -> str:
        return f"Signal({self.interface}.{self.member} from {self.path}: {self.body!r})"


def bus_address() -> str:
    """The system bus's address: ``DBUS_SYSTEM_BUS_ADDRESS``, else the standard socket."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or f"unix:path={SYSTEM_BUS_SOCKET}"


def _where(address: str) -> str:
    """``address`` for people: the socket path of a ``unix:path=`` address."""
    if address.startswith("unix:path=") and "," not in address:
        return address.removeprefix("unix:path=")
    return address


def match_rule(**keys: str) -> str:
    """A match rule for AddMatch, each value quoted as the spec says:
    ``match_rule(type="signal", interface="org.x")`` -> ``type='signal',interface='org.x'``."""
    parts = []
    for key, value in keys.items():
        quoted = "'" + value.replace("'", "'\\''") + "'"
        parts.append(f"{key}={quoted}")
    return ",".join(parts)


def plain(value: Any) -> Any:
    """``value`` with every D-Bus variant replaced by its value, recursively."""
    inner = getattr(value, "value", None)
    if inner is not None and hasattr(value, "signature"):
        return plain(inner)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def variant(signature: str, value: Any) -> Any:
    """A D-Bus variant of ``value`` with type ``signature`` (for a call's body)."""
    from dbus_fast import Variant

    return Variant(signature, value)


class _Subscription:
    __slots__ = ("callback", "rule")

    def __init__(self, rule: str, callback: Callable[[Signal], None]) -> None:
        self.rule = rule
        self.callback = callback


class SystemBus:
    """The run's connection to the system bus (see the module docstring)."""

    __slots__ = ("_bus", "_closed", "_gone", "_lock", "_subscriptions", "address", "generation")

    def __init__(self, address: str | None = None) -> None:
        """``address``: a D-Bus address; left out, :func:`bus_address` at first use."""
        self.address = address
        self._bus: MessageBus | None = None
        self._lock: asyncio.Lock | None = None
        self._subscriptions: list[_Subscription] = []
        self._closed = False
        self.generation = 0  # connections made so far: per-connection state keys on it
        self._gone: asyncio.Task[None] | None = None  # ends when the connection is lost

    @property
    def where(self) -> str:
        """The bus, for people (a socket path or an address)."""
        return _where(self.address or bus_address())

    async def connection(self) -> MessageBus:
        """The connected bus, connecting (bounded) when there is none or it was lost."""
        bus = self._bus
        if bus is not None and bus.connected:
            return bus
        if self._closed:
            raise BusError(f"the connection to the system bus at {self.where} is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            bus = self._bus
            if bus is not None and bus.connected:
                return bus
            bus = self._bus = await self._connect()
            self.generation += 1
            self._gone = asyncio.create_task(_disconnected(bus), name="system bus connection")
            for sub in self._subscriptions:
                await self._add_match(bus, sub.rule)
            return bus

    async def lost(self) -> None:
        """Return when the current connection is lost (at once when there is none).

        Signals sent while no connection was up are never delivered: a watcher that
        returns from here reconnects (``connection()``) and looks again.
        """
        bus, gone = self._bus, self._gone
        if bus is None or not bus.connected or gone is None:
            return
        await asyncio.shield(gone)  # many wait on one connection; cancelling one is local

    async def _connect(self) -> MessageBus:
        from dbus_fast.aio import MessageBus

        address = self.address = self.address or bus_address()
        bus = MessageBus(bus_address=address, auth_timeout=CONNECT_TIMEOUT)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await bus.connect()
        except TimeoutError:
            bus.disconnect()
            raise BusError(
                f"no system bus at {self.where}: it did not answer within "
                f"{CONNECT_TIMEOUT:g} s; is dbus-daemon running?"
            ) from None
        except Exception as exc:
            raise BusError(
                f"no system bus at {self.where}: {_reason(exc)}; start it "
                "(dbus-daemon --system) or set DBUS_SYSTEM_BUS_ADDRESS"
            ) from exc
        bus.add_message_handler(self._dispatch)
        return bus

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        time_limit: float = CALL_TIMEOUT,
    ) -> list[Any]:
        """Call ``interface.member`` on ``path`` of ``destination``; its reply body as
        plain values. Raises BusError for an error reply, a lost connection or no reply
        within ``time_limit`` seconds."""
        from dbus_fast import Message, MessageType

        bus = await self.connection()
        what = f"{destination}: {interface}.{member} on {path}"
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        try:
            async with asyncio.timeout(time_limit):
                reply = await bus.call(message)
        except TimeoutError:
            raise BusError(f"{what} did not answer within {time_limit:g} s") from None
        except Exception as exc:
            raise BusError(f"{what}: the system bus at {self.where}: {_reason(exc)}") from exc
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise BusError(f"{what}: {reply.error_name}: {text}".rstrip(": "), reply.error_name)
        return [plain(v) for v in reply.body]

    async def answers(self, name: str, *, time_limit: float = CALL_TIMEOUT) -> bool:
        """True when ``name`` has an owner on the bus or can be activated on it."""
        (owned,) = await self.call(*_DBUS, "NameHasOwner", "s", [name], time_limit=time_limit)
        if owned:
            return True
        (names,) = await self.call(*_DBUS, "ListActivatableNames", time_limit=time_limit)
        return name in names

    async def subscribe(
        self, callback: Callable[[Signal], None], **rule: str
    ) -> Callable[[], None]:
        """Call ``callback`` with every signal that matches ``rule`` (match_rule's keys,
        ``type='signal'`` implied); returns the function that unsubscribes.

        Signals are dispatched to every subscription whose rule the bus matched for this
        connection, filtered here by the rule's sender, path, interface and member.
        """
        keys = {"type": "signal", **rule}
        text = match_rule(**keys)
        sub = _Subscription(text, _filtered(keys, callback))
        self._subscriptions.append(sub)
        try:
            bus = await self.connection()
            await self._add_match(bus, text)
        except BaseException:
            self._subscriptions.remove(sub)
            raise

        def unsubscribe() -> None:
            if sub not in self._subscriptions:
                return
            self._subscriptions.remove(sub)
            current = self._bus
            if current is not None and current.connected:
                from dbus_fast import Message

                current.send(
                    Message(
                        destination=_DBUS[0],
                        path=_DBUS[1],
                        interface=_DBUS[2],
                        member="RemoveMatch",
                        signature="s",
                        body=[text],
                    )
                )

        return unsubscribe

    async def _add_match(self, bus: MessageBus, rule: str) -> None:
        from dbus_fast import Message, MessageType

        message = Message(
            destination=_DBUS[0],
            path=_DBUS[1],
            interface=_DBUS[2],
            member="AddMatch",
            signature="s",
            body=[rule],
        )
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await bus.call(message)
        except TimeoutError:
            raise BusError(f"AddMatch {rule}: no answer within {CALL_TIMEOUT:g} s") from None
        if reply.message_type == MessageType.ERROR:
            raise BusError(f"AddMatch {rule}: {reply.error_name}: {reply.body}", reply.error_name)

    def _dispatch(self, message: Message) -> None:
        from dbus_fast import MessageType

        if message.message_type != MessageType.SIGNAL:
            return
        signal = Signal(
            message.sender or "",
            message.path or "",
            message.interface or "",
            message.member or "",
            [plain(v) for v in message.body],
        )
        for sub in tuple(self._subscriptions):
            sub.callback(signal)

    async def aclose(self) -> None:
        """Close the connection (the engine calls this at the end of the run)."""
        self._closed = True
        self._subscriptions.clear()
        bus, self._bus = self._bus, None
        if bus is None:
            return
        bus.disconnect()
        gone, self._gone = self._gone, None
        if gone is not None:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await gone
            except TimeoutError:
                gone.cancel()


async def _disconnected(bus: MessageBus) -> None:
    """Return when ``bus`` is disconnected, however it ended."""
    with contextlib.suppress(Exception):  # lost with an error: lost all the same
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


def _filtered(keys: dict[str, str], callback: Callable[[Signal], None]) -> Callable[[Signal], None]:
    """``callback`` for the signals that match ``keys`` only (the bus sends a connection
    every signal any of its rules matched)."""
    path = keys.get("path")
    interface = keys.get("interface")
    member = keys.get("member")
    sender = keys.get("sender")
    prefix = keys.get("path_namespace")

    def maybe(signal: Signal) -> None:
        if path is not None and signal.path != path:
            return
        if prefix is not None and not (
            signal.path == prefix or signal.path.startswith(prefix.rstrip("/") + "/")
        ):
            return
        if interface is not None and signal.interface != interface:
            return
        if member is not None and signal.member != member:
            return
        # Signals carry the sender's unique name: a well-known one was matched by the bus.
        if sender is not None and sender.startswith(":") and signal.sender != sender:
            return
        callback(signal)

    return maybe


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
