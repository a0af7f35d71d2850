"""The apt backend of ``pkg``: state from the dpkg status database, changes by ``apt-get``.

- What is installed is read from ``/var/lib/dpkg/status`` in this process (one read of
  the file, one scan for the names wanted; ~1 ms), never by a no-op ``apt-get install``
  (0.7 s: it rebuilds the cache). When dpkg has journal entries not yet folded into the
  status file (``/var/lib/dpkg/updates/``, after an interrupted dpkg), ``dpkg-query -W`` is
  asked instead: it reads both.
- What the package lists offer (candidate and known versions) comes from one ``apt-cache
  policy`` call for all the names that need it, only when something may have to change.
- Changes: one ``apt-get remove`` for all removals, then one ``apt-get install`` for all
  installs (``name`` or ``name=version``), with ``DEBIAN_FRONTEND=noninteractive``, the
  conffiles already on disk kept (``--force-confdef --force-confold``: a config file
  convergent wrote first stays) and a bounded wait for the package database's lock
  (``DPkg::Lock::Timeout``); apt's own error says who holds it.
- Commands run through ``convergent.host.process`` (their own session, dying with the
  agent) in the C locale, so their output can be read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from convergent.errors import ConvergentError

if TYPE_CHECKING:  # imported when a command runs: checking installed packages runs none
    from convergent.host import process

__all__ = [
    "ADMINDIR",
    "LOCK_WAIT",
    "Apt",
    "Available",
    "PackageError",
    "file_list",
    "installed_versions",
    "parse_policy",
]

ADMINDIR = "/var/lib/dpkg"
LOCK_WAIT = 120  # seconds apt-get waits for another holder of the package database's lock
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none", "LC_ALL": "C"}
_TAIL = 6  # lines of apt's errors quoted


class PackageError(ConvergentError):
    """A package query or transaction failed; the message quotes the package manager."""


class Available(NamedTuple):
    """What the package lists offer for one package: the candidate (None: nothing
    installable, e.g. a virtual package) and every version they know."""

    candidate: str | None
    versions: tuple[str, ...]


def _status_path() -> str:
    return os.path.join(ADMINDIR, "status")


def installed_versions(names: Iterable[str], status: str | None = None) -> dict[str, str | None]:
    """The installed version of each of ``names`` (None: not installed), from the dpkg
    status file ``status`` (the system's by default). A name may carry an architecture
    (``sl:amd64``). Only ``install ok installed`` counts as installed: a package left
    half-configured or with only its config files is not."""
    path = status or _status_path()
    with open(path, "rb") as f:
        data = b"\n" + f.read()
    found: dict[str, str | None] = {}
    for name in names:
        base, _, arch = name.partition(":")
        version = None
        needle = b"\nPackage: " + base.encode() + b"\n"
        start = data.find(needle)
        while start >= 0:
            end = data.find(b"\n\n", start + 1)
            stanza = data[start + 1 : end if end >= 0 else len(data)]
            fields = _fields(stanza)
            if fields.get(b"Status", b"").endswith(b" installed") and (
                not arch or fields.get(b"Architecture", b"").decode() in (arch, "all")
            ):
                version = fields.get(b"Version", b"").decode() or None
                break
            start = data.find(needle, start + 1)
        found[name] = version
    return found


def _fields(stanza: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for line in stanza.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        key, sep, value = line.partition(b":")
        if sep and key in (b"Status", b"Version", b"Architecture"):
            fields[key] = value.strip()
    return fields


def _journal_pending() -> bool:
    """True when dpkg's journal (``updates/``) holds entries the status file lacks."""
    try:
        return any(entry.isdecimal() for entry in os.listdir(os.path.join(ADMINDIR, "updates")))
    except OSError:
        return False


def parse_policy(text: str) -> dict[str, Available]:
    """``apt-cache policy`` output -> what it offers per package it knows (a name it does
    not know has no section)."""
    found: dict[str, Available] = {}
    name: str | None = None
    candidate: str | None = None
    versions: list[str] = []
    in_table = False

    def close() -> None:
        if name is not None:
            found[name] = Available(candidate, tuple(versions))

    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            close()
            name, candidate, versions, in_table = line[:-1], None, [], False
        elif name is None:
            continue
        elif line.startswith("  Candidate:"):
            value = line.partition(":")[2].strip()
            candidate = None if value == "(none)" else value
        elif line.startswith("  Version table:"):
            in_table = True
        elif in_table and line.startswith(" *** "):  # the installed version
            versions.append(line[5:].split()[0])
        elif in_table and line.startswith("     ") and not line.startswith("      "):
            versions.append(line.split()[0])
    close()
    return found


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf"}


def file_list(name: str) -> list[str]:
    """The paths the installed package ``name`` ships (dpkg's ``info/NAME.list``, or
    ``NAME:ARCH.list`` for a package several architectures may have); empty when it is
    not installed."""
    info = os.path.join(ADMINDIR, "info")
    base, _, arch = name.partition(":")
    native = _ARCH.get(os.uname().machine, os.uname().machine)
    candidates = [f"{name}.list"] if arch else [f"{base}.list", f"{base}:{native}.list"]
    for entry in candidates:
        try:
            with open(os.path.join(info, entry), encoding="utf-8", errors="replace") as f:
                return [line.rstrip("\n") for line in f if line.strip() not in ("", "/.")]
        except OSError:
            continue
    return []


def _apt_words(finished: process.Finished) -> str:
    """apt's own error lines (``E: ...``), else the tail of what it printed."""
    lines = [
        line.strip()
        for text in (finished.stderr.text(), finished.stdout.text())
        for line in text.splitlines()
        if line.strip()
    ]
    errors = [line for line in lines if line.startswith(("E:", "dpkg: error", "W: Could not"))]
    chosen = errors or lines
    return "; ".join(chosen[-_TAIL:]) or f"exit status {finished.code}"


def _holder(finished: process.Finished) -> str | None:
    """Who holds the lock, as apt said it while waiting: ``process 5895 (python3)``."""
    said = finished.stdout.text() + finished.stderr.text()
    _, found, rest = said.rpartition("It is held by ")
    if not found:
        return None
    return rest.splitlines()[0].rstrip(".") if rest else None


class Apt:
    """The apt backend (see the module docstring)."""

    label = "apt"
    lists_hint = "run apt-get update or set update_cache: auto"
    refresher = "apt-get update"

    def __init__(self, lock_wait: float = LOCK_WAIT) -> None:
        self.lock_wait = lock_wait
        self.refreshed = False  # the lists were refreshed during this run

    async def installed(self, names: Sequence[str]) -> dict[str, str | None]:
        """The installed version of each name (None: not installed)."""
        if not _journal_pending():
            return installed_versions(names)
        return await self._dpkg_query(names)

    async def _dpkg_query(self, names: Sequence[str]) -> dict[str, str | None]:
        finished = await self._run(
            ["dpkg-query", "-W", "-f=${binary:Package}\\t${Status}\\t${Version}\\n", *names],
            "dpkg-query",
        )
        found: dict[str, str | None] = dict.fromkeys(names)
        for line in finished.stdout.text().splitlines():
            package, _, rest = line.partition("\t")
            status, _, version = rest.partition("\t")
            if not status.endswith(" installed"):
                continue
            for name in names:
                if package == name or package.partition(":")[0] == name:
                    found[name] = version
        return found

    async def available(self, names: Sequence[str]) -> dict[str, Available | None]:
        """What the package lists offer for each name (None: not in them)."""
        finished = await self._run(["apt-cache", "policy", *names], "apt-cache policy")
        if finished.code != 0:
            raise PackageError(f"apt-cache policy failed: {_apt_words(finished)}")
        offered = parse_policy(finished.stdout.text())
        found: dict[str, Available | None] = {}
        for name in names:
            found[name] = offered.get(name) or offered.get(name.partition(":")[0])
        return found

    async def refresh(self, log: Callable[[str], None]) -> None:
        """Refresh the package lists (``apt-get update``)."""
        finished = await self._run(
            ["apt-get", "update", "-q", *self._lock_options()], "apt-get update"
        )
        if finished.code != 0:
            raise PackageError(f"apt-get update failed: {_apt_words(finished)}")

    async def remove(self, names: Sequence[str], log: Callable[[str], None]) -> None:
        """Remove ``names`` in one ``apt-get remove``."""
        argv = ["apt-get", "remove", "-y", "-q", *self._lock_options(), *names]
        await self._transaction(argv, "remove")

    async def install(self, specs: Sequence[str], log: Callable[[str], None]) -> None:
        """Install ``specs`` (``name`` or ``name=version``) in one ``apt-get install``."""
        argv = [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--allow-downgrades",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            *self._lock_options(),
            *specs,
        ]
        await self._transaction(argv, "install")

    def _lock_options(self) -> list[str]:
        return ["-o", f"DPkg::Lock::Timeout={max(0, round(self.lock_wait))}"]

    async def _transaction(self, argv: list[str], what: str) -> None:
        finished = await self._run(argv, f"apt-get {what}")
        if finished.code == 0:
            return
        words = _apt_words(finished)
        if "Could not get lock" in words or "Unable to acquire the dpkg" in words:
            holder = _holder(finished)
            raise PackageError(
                f"apt-get {what}: the package database is locked by another program"
                f"{f' ({holder})' if holder else ''}; waited {self.lock_wait:g} s: {words}; "
                "let it finish (or stop it) and run again"
            )
        raise PackageError(f"apt-get {what} failed: {words}")

    async def _run(self, argv: list[str], what: str) -> process.Finished:
        from convergent.host import process

        try:
            return await process.run(argv, env=_ENV)
        except OSError as exc:
            raise PackageError(
                f"{what}: cannot run {argv[0]}: {exc.strerror or exc}; is this a Debian "
                "system? (backend: packagekit works elsewhere)"
            ) from exc
