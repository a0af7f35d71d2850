"""What the ``pkg`` tests share: a machine left as it was found, apt's own history, policies.

Tests that change packages need root, ``apt-get`` and package lists that know the small
Debian packages they use (``sl``, ``cowsay``, ``hello``, ``fortune-mod``); they skip only
when one of those is truly missing. ``restore`` (a fixture in the test modules) records
what was installed before and, at the end, removes what the test installed that was not
(purging what left no trace before), including the dependencies apt pulled in for it:
those are read from apt's history (the ``Install:`` lines of the transactions convergent
ran during the test).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from convergent.resources.pkg_apt import installed_versions, parse_policy

__all__ = [
    "HISTORY",
    "PACKAGES",
    "History",
    "apt_ready",
    "candidate",
    "dpkg_status",
    "hand",
    "installed",
    "policy",
    "restored",
]

PACKAGES = ("sl", "cowsay", "hello", "fortune-mod")
HISTORY = Path("/var/log/apt/history.log")
# How convergent's apt-get command lines start (a person's, in ``hand``, put -y first).
OURS = ("apt-get install -y -q ", "apt-get remove -y -q ")
ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
BOUND = 300  # seconds an apt-get of small packages may take (downloads included)


def apt_ready() -> str | None:
    """Why the real-apt tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "changing packages needs root"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "not a Debian system (no apt-get/dpkg)"
    offered = parse_policy(
        subprocess.run(
            ["apt-cache", "policy", *PACKAGES], capture_output=True, text=True, env=ENV
        ).stdout
    )
    lacking = [p for p in PACKAGES if p not in offered or offered[p].candidate is None]
    if lacking:
        return f"the package lists lack {', '.join(lacking)}: run apt-get update"
    return None


def candidate(name: str) -> str:
    """The version apt would install for ``name`` now."""
    offer = parse_policy(
        subprocess.run(
            ["apt-cache", "policy", name], capture_output=True, text=True, env=ENV
        ).stdout
    )[name]
    assert offer.candidate is not None
    return offer.candidate


def installed(*names: str) -> dict[str, str | None]:
    return installed_versions(names)


def dpkg_status() -> bytes:
    return Path("/var/lib/dpkg/status").read_bytes()


def _known(name: str) -> bool:
    """True when dpkg has any record of ``name`` (installed or config files left)."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, env=ENV
    )
    return done.returncode == 0 and "not-installed" not in done.stdout


def hand(*argv: str) -> None:
    """What a person does in another terminal: ``apt-get ...`` (``-y``)."""
    done = subprocess.run(
        ["apt-get", "-y", "-q", "-o", f"DPkg::Lock::Timeout={BOUND}", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=BOUND * 2,
    )
    assert done.returncode == 0, f"apt-get {' '.join(argv)}: {done.stdout}{done.stderr}"


class History:
    """apt's history from a point on: the transactions run since ``History()``."""

    def __init__(self) -> None:
        self.offset = HISTORY.stat().st_size if HISTORY.exists() else 0

    def entries(self) -> list[dict[str, str]]:
        if not HISTORY.exists():
            return []
        with HISTORY.open("rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
        found: list[dict[str, str]] = []
        for block in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, sep, value = line.partition(": ")
                if sep:
                    fields[key] = value
            if fields:
                found.append(fields)
        return found

    def commandlines(self) -> list[str]:
        """The command lines of the apt-get calls convergent made since the start."""
        return [
            e["Commandline"] for e in self.entries() if e.get("Commandline", "").startswith(OURS)
        ]

    def installed_by_convergent(self) -> set[str]:
        """Every package the apt-get calls of convergent installed since the start."""
        names: set[str] = set()
        for entry in self.entries():
            if not entry.get("Commandline", "").startswith(OURS):
                continue
            for key in ("Install", "Downgrade", "Upgrade"):
                for match in re.finditer(r"(?:^|\), )([^ :,]+)(?::\w+)? \(", entry.get(key, "")):
                    names.add(match.group(1))
        return names


@pytest.fixture
def restored() -> Iterator[History]:
    """Leave the machine as it was: see the module docstring."""
    before = installed(*PACKAGES)
    known = {name for name in PACKAGES if _known(name)}
    history = History()
    yield history
    # What apt installed for convergent was, by apt's own account, not installed before.
    _restore(before, known, sorted(history.installed_by_convergent() - set(PACKAGES)))


def _restore(before: dict[str, str | None], known: set[str], extra: Iterable[str]) -> None:
    now = installed(*before)
    purge = [n for n, v in now.items() if v is not None and before[n] is None and n not in known]
    remove = [n for n, v in now.items() if v is not None and before[n] is None and n in known]
    reinstall = [f"{n}={v}" for n, v in before.items() if v is not None and now[n] != v]
    purge += [n for n in extra if installed(n)[n] is not None]
    if purge:
        hand("purge", *purge)
    if remove:
        hand("remove", *remove)
    if reinstall:
        hand("install", "--allow-downgrades", *reinstall)


def policy(path: Path, entries: Iterable[str]) -> Path:
    """A policy file of ``entries`` (YAML lines of the resources list)."""
    path.write_text("resources:\n" + "".join(f"  - {e}\n" for e in entries))
    return path
