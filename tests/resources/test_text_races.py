"""A local user (uid 65534) racing the root agent's ``line``, ``cron`` and ``download``
resources never steers them: no edit through a swapped-in symlink or a symlinked parent;
and a download killed mid-fetch leaves the old file and no temp file behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import ResourceError
from convergent.resources.base import Resource
from convergent.resources.cron import Cron
from convergent.resources.line import Line
from tests.e2e.agent import TIMEOUT, convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root, run_as_nobody
from tests.resources.httpserver import Server
from tests.resources.kinds import Shared, context

pytestmark = [needs_root, pytest.mark.timeout(120)]

ROUNDS = 200


def _converge_once(resource: Resource[Any]) -> str:
    """check, then apply what was found: "changed", "clean" or "refused"."""

    async def main() -> str:
        shared = Shared()
        try:
            ctx = context(resource, shared)
            change = await resource.check(ctx)
            if change is None:
                return "clean"
            await resource.apply(ctx, change)
            return "changed"
        finally:
            await shared.aclose()

    try:
        return asyncio.run(main())
    except ResourceError:
        return "refused"


@pytest.fixture
def open_lab() -> Iterator[Path]:
    """A directory the unprivileged user can reach, outside pytest's temp root: another
    pytest session starting on the machine makes that root 0700 again, which would cut
    the user off halfway through a race."""
    root = Path(tempfile.mkdtemp(prefix="convergent-race-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_line_never_edits_a_file_behind_a_swapped_in_symlink(open_lab: Path) -> None:
    root = open_lab
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    decoy = root / "shadow"
    decoy.write_text("root:x:0:\n")
    decoy.chmod(0o600)
    target = home / "app.conf"
    target.write_text("a=1\n")
    os.chown(target, NOBODY, NOBODY)
    add = Line("evil", path=str(target), text="nobody::0:")
    remove = Line("evil", path=str(target), text="nobody::0:", state="absent")
    link = str(home / "link")

    def swap(stopped: Any) -> int:
        # A symlink to root's file and the real file trade names again and again; when a
        # rename by the agent has replaced the symlink (never followed it), a new one is made.
        swaps = 0
        while swaps < 2_000_000 and (swaps % 256 or not stopped()):
            if not os.path.islink(target) and not os.path.islink(link):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
                os.symlink(decoy, link)
            swaps += exchange(str(target), link)
        return swaps

    outcomes: dict[str, int] = {}
    with Hostile(swap) as user:
        for n in range(ROUNDS):  # the line comes and goes: every round writes
            outcome = _converge_once(add if n % 2 else remove)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert decoy.read_text() == "root:x:0:\n"
    assert user.result > 0
    assert outcomes.get("changed") and outcomes.get("refused"), outcomes  # a real race


def test_line_and_cron_refuse_a_user_symlinked_parent(open_lab: Path) -> None:
    root = open_lab
    x = root / "x"
    x.mkdir()
    os.chown(x, NOBODY, NOBODY)
    victim = root / "etc"
    victim.mkdir()
    (victim / "sudoers").write_text("root ALL=(ALL) ALL\n")
    run_as_nobody(lambda: os.symlink(victim, x / "sub"))
    line = Line("sudo", path=str(x / "sub" / "sudoers"), text="nobody ALL=(ALL) NOPASSWD: ALL")
    cron = Cron("evil", cron_dir=str(x / "sub"), cmd="true")
    for resource in (line, cron):
        with pytest.raises(ResourceError, match=f"the symlink {x / 'sub'} is owned by nobody"):
            _strict(resource)
    assert sorted(p.name for p in victim.iterdir()) == ["sudoers"]
    assert (victim / "sudoers").read_text() == "root ALL=(ALL) ALL\n"


def _strict(resource: Resource[Any]) -> None:
    async def main() -> None:
        shared = Shared()
        try:
            ctx = context(resource, shared)
            change = await resource.check(ctx)
            if change is not None:
                await resource.apply(ctx, change)
        finally:
            await shared.aclose()

    asyncio.run(main())


def test_a_download_killed_mid_fetch_leaves_the_old_file_and_the_next_run_sweeps(
    tmp_path: Path,
) -> None:
    body = b"new tool\n"
    target = tmp_path / "tool"
    target.write_bytes(b"old tool\n")
    with Server() as server:
        server.files["/tool"] = body
        policy = tmp_path / "site.yaml"
        policy.write_text(
            f"resources:\n  - download: {target}\n    url: {server.url('/hold/tool')}\n"
            f"    sha256: {hashlib.sha256(body).hexdigest()}\n"
        )
        args = ["run", str(policy), "--state-dir", str(tmp_path / "state")]
        args += ["--converged-timeout", "0"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "convergent", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.requested.wait(TIMEOUT)  # the temp file exists, the body is due
        finally:
            agent.kill()
            agent.wait(TIMEOUT)
        assert target.read_bytes() == b"old tool\n"
        stale = [p.name for p in tmp_path.iterdir() if ".convergent-" in p.name]
        assert len(stale) == 1
        server.release.set()
        again = convergent(*args)
        assert again.returncode == 0, again.stderr
    assert target.read_bytes() == body
    assert not [p.name for p in tmp_path.iterdir() if ".convergent-" in p.name]
