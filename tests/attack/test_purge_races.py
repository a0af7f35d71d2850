"""``purge`` and ``recurse`` walk a tree by descriptors: a local user who owns a
directory below the managed path and swaps one of its subdirectories for a symlink to
root's files, again and again, never gets them deleted, chowned or chmodded."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.e2e.agent import convergent
from tests.host.hostile import NOBODY, Hostile, exchange, needs_root

pytestmark = needs_root


def test_purge_and_recurse_never_reach_roots_files_through_a_swapped_symlink(
    open_lab: Path,
) -> None:
    precious = open_lab / "precious"
    precious.mkdir(mode=0o700)
    for i in range(20):
        (precious / f"keep{i}").write_text("root's\n")
        (precious / f"keep{i}").chmod(0o600)
    source = open_lab / "source"
    (source / "sub").mkdir(parents=True)
    (source / "top").write_text("a\n")
    target = open_lab / "target"
    sub = target / "sub"
    sub.mkdir(parents=True)
    os.chown(sub, NOBODY, NOBODY)

    def prepare() -> None:
        (sub / "d").mkdir(exist_ok=True)
        for i in range(20):
            (sub / "d" / f"junk{i}").write_text("hers\n")
        if not (sub / "l").is_symlink():
            (sub / "l").symlink_to(precious)

    with Hostile(lambda stopped: prepare()):
        pass
    policy = open_lab / "p.yaml"
    policy.write_text(
        f"resources:\n  - file: {target}\n    state: directory\n    source: {source}\n"
        "    recurse: true\n    purge: true\n    mode: '0755'\n"
    )

    def swap(stopped):  # type: ignore[no-untyped-def]
        n = 0
        while not stopped() and n < 5_000_000:
            if not exchange(str(sub / "d"), str(sub / "l")):
                with contextlib.suppress(OSError):
                    prepare()  # purged: put them back
                continue
            n += 1
        return n

    purged = 0
    outs: list[str] = []
    with Hostile(swap) as user:
        for _ in range(10):
            done = convergent(
                "run",
                "--converged-timeout",
                "0",
                "--state-dir",
                str(open_lab / "state"),
                str(policy),
                timeout=60,
            )
            purged += " removed" in done.stdout
            outs.append(done.stdout + done.stderr)
    assert user.result > 0
    assert purged > 1, outs
    assert sorted(p.name for p in precious.iterdir()) == sorted(f"keep{i}" for i in range(20))
    for p in precious.iterdir():
        st = p.lstat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0), p
    st = precious.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o700, 0)
