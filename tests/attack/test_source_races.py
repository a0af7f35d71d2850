"""A ``source:`` a local user owns (a file, or a tree copied with ``recurse``) never
leads the root agent into copying what she may not read: a symlink she swaps in for
one of her files, at any moment, is refused or copied as a link, never followed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.agent import Agent, convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root

pytestmark = needs_root
SECRET = b"root's secret\n"


def _run(state: Path, policy: Path) -> subprocess.CompletedProcess[str]:
    return convergent(
        "run", "--converged-timeout", "0", "--state-dir", str(state), str(policy), timeout=60
    )


def _leaks(out: Path) -> list[str]:
    found = []
    for top, _dirs, files in os.walk(out):
        for name in files:
            path = Path(top) / name
            if not path.is_symlink() and SECRET in path.read_bytes():
                found.append(str(path))
    return found


@pytest.mark.timeout(180)  # three runs raced by a swapping user on 2 cores
def test_a_source_swapped_for_a_symlink_to_roots_file_is_never_copied(open_lab: Path) -> None:
    secret = open_lab / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    home = open_lab / "u"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    tree, out = home / "tree", open_lab / "out"
    out.mkdir()

    def prepare() -> None:
        tree.mkdir()
        (tree / "plain").write_text("mine\n")
        (tree / "link").symlink_to(secret)
        (home / "f").write_text("mine\n")
        (home / "g").symlink_to(secret)

    with Hostile(lambda stopped: prepare()):
        pass
    entries = "".join(
        f"  - file: {out}/t{i}\n    state: directory\n    source: {tree}\n    recurse: true\n"
        f"    mode: '0644'\n  - file: {out}/f{i}\n    source: {home}/f\n    mode: '0644'\n"
        for i in range(8)
    )
    policy = open_lab / "p.yaml"
    policy.write_text("resources:\n" + entries)

    def swap(stopped):  # type: ignore[no-untyped-def]
        n = 0
        while not stopped() and n < 5_000_000:
            n += exchange(str(tree / "plain"), str(tree / "link"))
            n += exchange(str(home / "f"), str(home / "g"))
        return n

    swaps = 0
    for _ in range(3):
        args = ("run", "--converged-timeout", "0", "--state-dir", str(open_lab / "state"))
        with Agent(*args, str(policy)) as agent:
            # She swaps while the agent starts and copies, until it reports its first copy;
            # then she stops, so the run (event driven: every swap is an event in a watched
            # source) can converge and end.
            with Hostile(swap) as user:
                agent.wait_for_line(lambda line: str(out) in line, timeout=60)
            swaps += user.result
            agent.wait(timeout=120)
        assert _leaks(out) == []
        shutil.rmtree(out)
        out.mkdir()
    assert swaps > 0
