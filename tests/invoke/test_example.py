"""examples/site/operations.yaml does what its comments (and the README's tour) say:
a release after its noop, a confirmation refused without a terminal, the history, and a
teardown that stops the processes and keeps what says destroy: keep."""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent import EXAMPLES
from tests.invoke.site import run


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The example, its root moved under tmp_path and its processes made recognisable;
    any of them still running at the end is killed."""
    token = f"{random.randint(10**6, 10**7)}.25"
    text = (EXAMPLES / "site" / "operations.yaml").read_text()
    assert "/tmp/convergent-ops" in text and "sleep infinity" in text
    text = text.replace("/tmp/convergent-ops", str(tmp_path / "site"))
    policy = tmp_path / "operations.yaml"
    policy.write_text(text.replace("sleep infinity", f"sleep {token}"))
    yield policy, token
    for pid in _pids(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry))
    return found


def test_the_site_example_releases_confirms_records_and_tears_down(
    example: tuple[Path, str], tmp_path: Path
) -> None:
    policy, token = example
    state = ["--state-dir", str(tmp_path / "state")]
    site = tmp_path / "site"
    release = ["invoke", str(policy), "release", "--set", "version=2.0", *state]
    assert run(*release).returncode == 3  # require_noop_first
    noop = run(*release, "--noop")
    assert noop.returncode == 0, noop.stderr
    assert "invoke release (noop): 7 resource(s) would change" in noop.stdout
    done = run(*release)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "web-beta" / "index.html").read_text() == "<h1>hi from beta, release 2.0</h1>\n"
    pids = _pids(token)
    assert len(pids) == 2
    flush = run("invoke", str(policy), "flush-cache", *state)
    assert flush.returncode == 3
    assert not (site / "cache-main.conf").exists()
    history = run("history", *state)
    outcomes = [line.split(" -> ")[1] for line in history.stdout.splitlines()]
    assert [o.split(":")[0].split(" (")[0] for o in outcomes] == [
        "refused",
        "ok",
        "ok",
        "refused",
    ]
    (site / "notes.txt").write_text("mine\n")
    fds = [os.pidfd_open(pid) for pid in pids]
    try:
        torn = run("destroy", str(policy), *state)
        assert torn.returncode == 0, torn.stdout + torn.stderr
        for fd in fds:
            assert select.select([fd], [], [], 10)[0], "a process still runs"
    finally:
        for fd in fds:
            os.close(fd)
    assert "file[" + str(site / "notes.txt") + "]: left alone: kept" in torn.stdout
    assert sorted(p.name for p in site.iterdir()) == ["notes.txt"]


def test_the_site_policy_deploys_its_web_role_and_tears_it_down(tmp_path: Path) -> None:
    """examples/site/site.yaml (one policy, two roles): deploy-web after its noop on a web
    host, then destroy --only webserver takes the web sites away and leaves the rest."""
    copy = tmp_path / "site"
    shutil.copytree(EXAMPLES / "site", copy)
    root = tmp_path / "root"
    policy = copy / "site.yaml"
    text = policy.read_text()
    assert "root: /tmp/convergent-site" in text
    policy.write_text(text.replace("root: /tmp/convergent-site", f"root: {root}"))
    state = ["--state-dir", str(tmp_path / "state")]
    deploy = ["invoke", str(policy), "deploy-web", "--class", "web", *state]
    assert run(*deploy).returncode == 3
    noop = run(*deploy, "--noop")
    assert noop.returncode == 0, noop.stdout + noop.stderr
    done = run(*deploy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "etc" / "site-main.conf").read_text() == f"listen 8080\nroot {root}/srv/main\n"
    assert not (root / "etc" / "motd").exists()  # not part of the webserver bundle
    common = run("run", str(policy), "--class", "web", "--converged-timeout", "0", *state)
    assert common.returncode == 0, common.stdout + common.stderr
    torn = run("destroy", str(policy), "--class", "web", "--only", "webserver", *state)
    assert torn.returncode == 0, torn.stdout + torn.stderr
    assert not (root / "srv" / "main").exists() and not (root / "srv" / "docs").exists()
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["motd"]
