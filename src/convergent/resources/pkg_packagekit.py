"""The PackageKit backend of ``pkg``: the same interface as apt's, over the system D-Bus.

PackageKit (``org.freedesktop.PackageKit``) drives the host's own package manager (apt on
Debian, dnf on Fedora...), so one policy works on both. Each query or change is one
PackageKit transaction: ``CreateTransaction``, then ``Resolve`` (installed versions, and
what the repositories offer), ``InstallPackages`` (all installs of a group in one call),
``RemovePackages`` (all removals in one call) or ``RefreshCache``; the transaction's
``Package``, ``ErrorCode`` and ``Finished`` signals carry the answer. Every transaction
is bounded (``QUERY_WAIT``, ``CHANGE_WAIT``); one that does not finish in time is
cancelled and fails saying so. Installs accept only trusted (signed) packages; removals
never remove packages that depend on the one removed (PackageKit then refuses, saying
which).

The connection is the run's one :class:`~convergent.host.dbus.SystemBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from convergent.host.dbus import BusError, SystemBus
from convergent.resources.pkg_apt import Available, PackageError

if TYPE_CHECKING:
    from convergent.host.dbus import Signal

__all__ = ["ANSWER_WAIT", "CHANGE_WAIT", "NAME", "QUERY_WAIT", "PackageKit", "package_id"]

NAME = "org.freedesktop.PackageKit"
ANSWER_WAIT = 5.0  # seconds for the bus to say whether PackageKit is there (auto)
QUERY_WAIT = 120.0  # seconds a Resolve may take (the first one loads the package cache)
CHANGE_WAIT = 1800.0  # seconds an install, removal or refresh may take
_PATH = "/org/freedesktop/PackageKit"
_TRANSACTION = "org.freedesktop.PackageKit.Transaction"
_FILTER_INSTALLED = 1 << 2  # PK_FILTER_ENUM_INSTALLED
_INFO_INSTALLED = 1  # PK_INFO_ENUM_INSTALLED
_EXIT_SUCCESS = 1  # PK_EXIT_ENUM_SUCCESS
_ONLY_TRUSTED = 1 << 1  # PK_TRANSACTION_FLAG_ENUM_ONLY_TRUSTED
_NOT_FOUND = (8, 28)  # PK_ERROR_ENUM_PACKAGE_NOT_FOUND, ..._PACKAGE_NOT_INSTALLED (Resolve)


def package_id(name: str, version: str, arch: str = "", data: str = "") -> str:
    """PackageKit's package id: ``name;version;arch;data``."""
    return f"{name};{version};{arch};{data}"


class _Outcome:
    __slots__ = ("done", "errors", "exit", "packages")

    def __init__(self) -> None:
        self.packages: list[tuple[int, str]] = []  # (info, package id)
        self.errors: list[str] = []
        self.exit: int | None = None
        self.done = asyncio.Event()

    def signal(self, signal: Signal) -> None:
        if signal.member == "Package" and len(signal.body) >= 2:
            self.packages.append((int(signal.body[0]), str(signal.body[1])))
        elif signal.member == "ErrorCode" and len(signal.body) >= 2:
            self.errors.append(f"{signal.body[1]} (error {signal.body[0]})")
        elif signal.member == "Finished":
            self.exit = int(signal.body[0]) if signal.body else None
            self.done.set()
        elif signal.member == "Destroy":
            self.done.set()


class PackageKit:
    """The PackageKit backend (see the module docstring); ``bus`` is set before use."""

    label = "PackageKit"
    lists_hint = "run pkcon refresh or set update_cache: auto"
    refresher = "PackageKit RefreshCache"

    def __init__(self, bus: SystemBus | None = None) -> None:
        self.bus = bus or SystemBus()
        self.refreshed = False  # the lists were refreshed during this run
        self._ids: dict[tuple[str, str], str] = {}  # (name, version) -> package id seen

    async def installed(self, names: Sequence[str]) -> dict[str, str | None]:
        """The installed version of each name (None: not installed), one Resolve."""
        found: dict[str, str | None] = dict.fromkeys(names)
        outcome = await self._run("Resolve", "tas", [_FILTER_INSTALLED, list(names)], QUERY_WAIT)
        self._check(outcome, "Resolve", not_found_ok=True)
        for info, pid in outcome.packages:
            name, version, arch = _split(pid)
            key = _match(name, arch, names)
            if key is not None and info == _INFO_INSTALLED:
                found[key] = version
                self._ids[(key, version)] = pid
        return found

    async def available(self, names: Sequence[str]) -> dict[str, Available | None]:
        """What the repositories offer for each name (None: nothing), one Resolve."""
        outcome = await self._run("Resolve", "tas", [0, list(names)], QUERY_WAIT)
        self._check(outcome, "Resolve", not_found_ok=True)
        versions: dict[str, list[str]] = {}
        candidate: dict[str, str] = {}
        for info, pid in outcome.packages:
            name, version, arch = _split(pid)
            key = _match(name, arch, names)
            if key is None:
                continue
            self._ids[(key, version)] = pid
            versions.setdefault(key, []).append(version)
            if info != _INFO_INSTALLED or key not in candidate:
                candidate[key] = version
        return {
            n: Available(candidate.get(n), tuple(versions[n])) if n in versions else None
            for n in names
        }

    async def refresh(self, log: Callable[[str], None]) -> None:
        """Refresh the package lists (``RefreshCache``)."""
        outcome = await self._run("RefreshCache", "b", [False], CHANGE_WAIT)
        self._check(outcome, "RefreshCache")

    async def remove(self, names: Sequence[str], log: Callable[[str], None]) -> None:
        """Remove ``names`` in one ``RemovePackages``."""
        installed = await self.installed(names)
        ids = [self._ids[(n, v)] for n, v in installed.items() if v is not None]
        if not ids:
            return
        outcome = await self._run("RemovePackages", "tasbb", [0, ids, False, False], CHANGE_WAIT)
        self._check(outcome, "RemovePackages")

    async def install(self, specs: Sequence[str], log: Callable[[str], None]) -> None:
        """Install ``specs`` (``name`` or ``name=version``) in one ``InstallPackages``."""
        wanted = [spec.partition("=") for spec in specs]
        names = [name for name, _, _ in wanted]
        offered = await self.available(names)
        ids: list[str] = []
        for name, _, version in wanted:
            offer = offered.get(name)
            target = version or (offer.candidate if offer else None)
            pid = self._ids.get((name, target)) if target else None
            if pid is None:
                raise PackageError(f"PackageKit: no package {name} {target or ''} to install")
            ids.append(pid)
        outcome = await self._run("InstallPackages", "tas", [_ONLY_TRUSTED, ids], CHANGE_WAIT)
        self._check(outcome, "InstallPackages")

    # -- transactions ---------------------------------------------------------------------

    async def _run(self, method: str, signature: str, body: list[Any], bound: float) -> _Outcome:
        """One PackageKit transaction: its Package and ErrorCode signals and exit status."""
        try:
            (path,) = await self.bus.call(NAME, _PATH, NAME, "CreateTransaction")
        except BusError as exc:
            raise PackageError(f"PackageKit is not available: {exc}") from exc
        outcome = _Outcome()
        try:
            unsubscribe = await self.bus.subscribe(
                outcome.signal, sender=NAME, path=path, interface=_TRANSACTION
            )
        except BusError as exc:
            raise PackageError(f"PackageKit: {exc}") from exc
        try:
            await self.bus.call(NAME, path, _TRANSACTION, "SetHints", "as", [["interactive=false"]])
            await self.bus.call(NAME, path, _TRANSACTION, method, signature, body)
            try:
                async with asyncio.timeout(bound):
                    await outcome.done.wait()
            except TimeoutError:
                await self._cancel(path)
                raise PackageError(
                    f"PackageKit {method} did not finish within {bound:g} s (another "
                    "program may hold the package database's lock); it was cancelled"
                ) from None
        except BusError as exc:
            raise PackageError(f"PackageKit {method}: {exc}") from exc
        finally:
            unsubscribe()
        return outcome

    async def _cancel(self, path: str) -> None:
        with contextlib.suppress(BusError):  # gone already: nothing to cancel
            await self.bus.call(NAME, path, _TRANSACTION, "Cancel", time_limit=ANSWER_WAIT)

    def _check(self, outcome: _Outcome, method: str, *, not_found_ok: bool = False) -> None:
        if outcome.exit == _EXIT_SUCCESS:
            return
        errors = outcome.errors
        if not_found_ok and errors and all(_code(e) in _NOT_FOUND for e in errors):
            return
        words = "; ".join(errors) or f"exit status {outcome.exit}"
        raise PackageError(f"PackageKit {method} failed: {words}")


def _code(error: str) -> int:
    tail = error.rpartition("(error ")[2].rstrip(")")
    return int(tail) if tail.isdecimal() else -1


def _split(pid: str) -> tuple[str, str, str]:
    parts = pid.split(";")
    parts += [""] * (4 - len(parts))
    return parts[0], parts[1], parts[2]


def _match(name: str, arch: str, names: Sequence[str]) -> str | None:
    """Which of ``names`` a package id's name and arch answer (``sl`` or ``sl:amd64``)."""
    if name in names:
        return name
    qualified = f"{name}:{arch}"
    return qualified if qualified in names else None
