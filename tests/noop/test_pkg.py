"""``--noop`` and ``pkg``: it predicts its own change exactly (the version it would
install), and what reads the host after it *may* change, with the reason: the files a
package ships are not known before it is installed. Real apt and dpkg (root, package
lists that know ``sl``); the machine is put back as it was found (``restored``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from convergent import Pkg
from convergent.engine.report import Changed, WouldChange
from tests.noop.support import noop_then_real, then_a_file
from tests.resources.pkg_support import BOUND, History, apt_ready, candidate, installed, restored

pytestmark = [
    pytest.mark.skipif(apt_ready() is not None, reason=apt_ready() or ""),
    pytest.mark.timeout(BOUND * 2),
    pytest.mark.slow,
]
__all__ = ["restored"]  # the fixture, imported to be used here


def test_a_package_predicts_its_version_and_readers_after_it_may_change(
    tmp_path: Path, restored: History
) -> None:
    assert installed("sl")["sl"] is None, "sl is installed: remove it to run this test"
    version = candidate("sl")
    conf = tmp_path / "after.conf"
    outcome = asyncio.run(noop_then_real(then_a_file(Pkg("sl"), conf), str(tmp_path / "state")))
    assert outcome.would == {"pkg[sl]"}
    assert outcome.may == {
        f"file[{conf}]": "upstream pkg[sl] would change what no kind describes "
        "(pkg makes no prediction)"
    }
    assert outcome.would <= outcome.real <= outcome.would | set(outcome.may)
    said = [r for r in outcome.noop_reports if isinstance(r, WouldChange)]
    assert [r.change.summary for r in said if r.change] == [f"install {version}"]
    done = [r for r in outcome.real_reports if isinstance(r, Changed) and r.resource == "pkg[sl]"]
    assert [r.summary for r in done] == [f"installed {version}"]
    assert installed("sl")["sl"] == version
