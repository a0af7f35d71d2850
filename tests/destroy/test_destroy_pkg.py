"""``destroy: remove`` on a package: removed by destroy through the real apt; without it
(test_destroy.py) the package is not touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.agent import convergent
from tests.resources.pkg_support import BOUND, History, apt_ready, hand, installed, restored

pytestmark = [
    pytest.mark.skipif(apt_ready() is not None, reason=apt_ready() or ""),
    pytest.mark.timeout(BOUND * 2),
    pytest.mark.slow,
]
__all__ = ["restored"]  # the fixture, imported to be used here


def test_a_package_with_destroy_remove_is_removed(tmp_path: Path, restored: History) -> None:
    if installed("sl")["sl"] is None:
        hand("install", "sl")
    policy = tmp_path / "policy.yaml"
    policy.write_text("resources:\n  - pkg: sl\n    backend: apt\n    destroy: remove\n")
    state = str(tmp_path / "state")
    noop = convergent("destroy", str(policy), "--noop", "--state-dir", state, timeout=BOUND)
    assert noop.returncode == 0, noop.stdout + noop.stderr
    assert "pkg[sl]: would change: remove" in noop.stdout
    assert installed("sl")["sl"] is not None
    done = convergent("destroy", str(policy), "--state-dir", state, timeout=BOUND)
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed("sl")["sl"] is None
