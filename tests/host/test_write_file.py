"""``host.atomic.write_file``: the one-shot atomic write the command line uses (unit files,
schemas, man pages, DOT): a symlink at the target is replaced, never followed; a user's
symlinked parent is refused; the file is never seen half written or readable early."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from convergent.host import fs
from convergent.host.atomic import write_file
from tests.host.hostile import NOBODY, lab, needs_root


def test_write_file_replaces_a_symlink_at_the_target_instead_of_following_it(
    tmp_path: Path,
) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text("precious\n")
    target = tmp_path / "unit.service"
    target.symlink_to(decoy)
    write_file(str(target), b"[Unit]\n", mode=0o644)
    assert decoy.read_text() == "precious\n"
    assert not target.is_symlink()
    assert target.read_bytes() == b"[Unit]\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if ".convergent-" in p.name] == []


@needs_root
def test_write_file_refuses_a_users_symlinked_parent(tmp_path: Path) -> None:
    home = lab(tmp_path) / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    (tmp_path / "etc").mkdir()
    (home / "out").symlink_to(tmp_path / "etc")
    os.lchown(home / "out", NOBODY, NOBODY)
    with pytest.raises(fs.PathRefused):
        write_file(str(home / "out" / "passwd"), b"root::0:0::/:/bin/sh\n")
    assert list((tmp_path / "etc").iterdir()) == []
