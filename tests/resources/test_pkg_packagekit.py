"""``pkg`` through PackageKit over D-Bus: the same install and removal as with apt, on a
private system bus the test starts (tests/support_dbus.py), with the real ``packagekitd``
activated on it (its apt backend then changes this machine's packages).

``auto`` picks PackageKit here because its name answers on that bus. The machine is left
as it was found (``restored``). Needs root, dbus-daemon and packagekit (``make test``
installs them); every wait is bounded.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.resources.pkg_support import (
    BOUND,
    History,
    apt_ready,
    candidate,
    hand,
    installed,
    policy,
    restored,
)
from tests.support_dbus import PrivateBus, dbus_daemon, private_system_bus

PACKAGEKITD = "/usr/libexec/packagekitd"


def _missing() -> str | None:
    if dbus_daemon() is None:
        return "dbus-daemon is not installed"
    if not os.path.exists(PACKAGEKITD):
        return "packagekit is not installed (apt-get install packagekit)"
    return apt_ready()


pytestmark = [
    pytest.mark.skipif(_missing() is not None, reason=_missing() or ""),
    pytest.mark.timeout(BOUND * 2),
    pytest.mark.slow,
]
__all__ = ["restored"]  # the fixture, imported to be used here


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with private_system_bus() as private:
        yield private


def run(
    tmp_path: Path, bus: PrivateBus, *entries: str, noop: bool = False
) -> subprocess.CompletedProcess[str]:
    args = ["run", str(policy(tmp_path / "p.yaml", entries)), "--converged-timeout", "0"]
    args += ["--state-dir", str(tmp_path / "state"), *(["--noop"] if noop else [])]
    return convergent(*args, timeout=BOUND, env=bus.env())


def _packagekit_entries(history: History) -> list[dict[str, str]]:
    return [e for e in history.entries() if e.get("Commandline", "").startswith("packagekit")]


def test_auto_installs_a_group_in_one_packagekit_transaction(
    tmp_path: Path, bus: PrivateBus, restored: History
) -> None:
    hand("remove", "sl", "hello")
    versions = {"sl": candidate("sl"), "hello": candidate("hello")}
    would = run(tmp_path, bus, "pkg: sl", "pkg: hello", noop=True)
    assert would.returncode == 0, would.stdout + would.stderr
    assert f"pkg[sl]: would change: install {versions['sl']}" in would.stdout.splitlines()
    assert installed("sl", "hello") == {"sl": None, "hello": None}
    done = run(tmp_path, bus, "pkg: sl", "pkg: hello")
    assert done.returncode == 0, done.stdout + done.stderr
    for name, version in versions.items():
        assert f"pkg[{name}]: installed {version}" in done.stdout.splitlines()
    assert installed("sl", "hello") == versions
    (entry,) = _packagekit_entries(restored)
    assert entry["Commandline"] == "packagekit role='install-packages'"
    assert "sl:" in entry["Install"] and "hello:" in entry["Install"]
    assert restored.commandlines() == []  # no apt-get of convergent's own


def test_absent_removes_through_packagekit(
    tmp_path: Path, bus: PrivateBus, restored: History
) -> None:
    hand("install", "sl")
    version = installed("sl")["sl"]
    done = run(tmp_path, bus, "pkg: sl\n    state: absent\n    backend: packagekit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pkg[sl]: removed {version}" in done.stdout.splitlines()
    assert installed("sl") == {"sl": None}
    (entry,) = _packagekit_entries(restored)
    assert entry["Commandline"] == "packagekit role='remove-packages'"


def test_an_unknown_package_fails_alone_through_packagekit(
    tmp_path: Path, bus: PrivateBus, restored: History
) -> None:
    hand("remove", "hello")
    done = run(
        tmp_path,
        bus,
        "pkg: hello\n    update_cache: never",
        "pkg: convergent-no-such-package\n    update_cache: never",
    )
    assert done.returncode == 1
    text = done.stdout + done.stderr
    assert "convergent-no-such-package: not in the package lists; run pkcon refresh" in text
    assert installed("hello") == {"hello": candidate("hello")}


def test_a_pinned_version_is_installed_exactly_through_packagekit(
    tmp_path: Path, bus: PrivateBus, restored: History
) -> None:
    hand("remove", "hello")
    version = candidate("hello")
    done = run(tmp_path, bus, f'pkg: hello\n    state: "{version}"\n    backend: packagekit')
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pkg[hello]: installed {version}" in done.stdout.splitlines()
    assert installed("hello") == {"hello": version}
    (entry,) = _packagekit_entries(restored)
    assert re.search(rf"\bhello:\S+ \({re.escape(version)}\)", entry["Install"]), entry


def test_a_pinned_version_packagekit_does_not_offer_fails_naming_what_it_has(
    tmp_path: Path, bus: PrivateBus, restored: History
) -> None:
    done = run(
        tmp_path,
        bus,
        'pkg: hello\n    state: "0.0.1-9"\n    backend: packagekit\n    update_cache: never',
    )
    assert done.returncode == 1
    text = done.stdout + done.stderr
    assert "version 0.0.1-9 is not in the package lists" in text, text
    assert candidate("hello") in text
    assert _packagekit_entries(restored) == []
