"""``file`` links and parents: ``state: link``/``hard`` with ``target``, ``follow`` and
``parents``, on real files; each the change, a clean second run, and noop changing nothing."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Engine, WouldChange
from convergent.errors import ParamError, ResourceError
from convergent.graph import Graph
from convergent.resources.base import Resource
from convergent.resources.file import File
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody
from tests.resources.test_file import Reports, apply, check, converge, snapshot


def noop_changes_nothing(tmp_path: Path, resource: File) -> str:
    """Run ``resource`` under noop through the engine: nothing below tmp_path changes;
    returns the would-change summary."""
    graph: Graph[Resource[Any]] = Graph()
    graph.add(resource)
    before = snapshot(tmp_path)
    reports: list[Any] = []
    engine = Engine(graph, noop=True, converged_timeout=0, reporter=reports.append)
    result = asyncio.run(asyncio.wait_for(engine.run(), 10))
    assert result.failed == 0
    assert snapshot(tmp_path) == before
    would = [r for r in reports if isinstance(r, WouldChange)]
    assert len(would) == 1 and would[0].change is not None
    return str(would[0].change.summary)


# -- state: link ----------------------------------------------------------------------


def test_a_symlink_is_made_with_the_target_written_as_given(tmp_path: Path) -> None:
    link = tmp_path / "current"
    resource = File(str(link), state="link", target="releases/1.2")
    assert noop_changes_nothing(tmp_path, resource) == "created"
    change = converge(resource)
    assert change is not None and change.summary == "created"
    assert os.readlink(link) == "releases/1.2"


def test_a_symlink_pointing_elsewhere_is_repointed_atomically(tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to("/old")
    resource = File(str(link), state="link", target="/new")
    assert noop_changes_nothing(tmp_path, resource) == "link target /old -> /new"
    change = converge(resource)
    assert change is not None and change.summary == "link target /old -> /new"
    assert os.readlink(link) == "/new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current"]  # no temp left


def test_a_file_is_replaced_by_a_link_only_with_force(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("data\n")
    with pytest.raises(ResourceError, match=f"{path} is a file; set force: true"):
        check(File(str(path), state="link", target="/etc/hostname"))
    assert path.read_text() == "data\n"
    converge(File(str(path), state="link", target="/etc/hostname", force=True))
    assert os.readlink(path) == "/etc/hostname"


def test_a_links_owner_is_set_on_the_link_itself(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("x")
    link = tmp_path / "l"
    link.symlink_to(target)
    change = converge(File(str(link), state="link", target=str(target), owner="65534"))
    assert change is not None and change.summary == "owner 0 -> 65534"
    assert link.lstat().st_uid == 65534
    assert target.stat().st_uid == 0


# -- state: hard ----------------------------------------------------------------------


def test_a_hard_link_shares_the_targets_inode(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("shared\n")
    link = tmp_path / "alias"
    resource = File(str(link), state="hard", target=str(target))
    assert noop_changes_nothing(tmp_path, resource) == "created"
    change = converge(resource)
    assert change is not None and change.summary == "created"
    assert link.stat().st_ino == target.stat().st_ino


def test_a_file_at_a_hard_links_path_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_text("shared\n")
    link = tmp_path / "alias"
    link.write_text("other\n")
    with pytest.raises(ResourceError, match="set force: true"):
        check(File(str(link), state="hard", target=str(target)))
    converge(File(str(link), state="hard", target=str(target), force=True))
    assert link.stat().st_ino == target.stat().st_ino


def test_a_hard_link_across_file_systems_fails_clearly_and_makes_nothing(tmp_path: Path) -> None:
    if os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same file system as tmp_path here")
    link = tmp_path / "alias"
    target = Path("/dev/shm") / f"convergent-test-{os.getpid()}"
    target.write_text("x")
    try:
        with pytest.raises(ResourceError, match=r"different file systems .*use state: link"):
            check(File(str(link), state="hard", target=str(target)))
    finally:
        target.unlink()
    assert not link.exists()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"state": "hard", "target": "relative/f"}, "target", "needs an absolute target"),
        ({"state": "link"}, "target", "needs target"),
        ({"state": "link", "target": "/x", "mode": "0644"}, "mode", "no meaning"),
        ({"target": "/x"}, "target", "no meaning with state: exists"),
        ({"state": "absent", "follow": True}, "follow", "no meaning"),
    ],
)
def test_bad_link_parameters_are_rejected_naming_the_field(
    fields: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ParamError, match=words) as info:
        File("/tmp/convergent-test-never-written", **fields)
    assert info.value.field == field


# -- follow ---------------------------------------------------------------------------


def test_follow_applies_mode_to_the_links_target_and_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("keep\n")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    resource = File(str(link), mode="0644", follow=True)
    assert noop_changes_nothing(tmp_path, resource) == "mode 0600 -> 0644"
    change = converge(resource)
    assert change is not None and change.summary == "mode 0600 -> 0644"
    assert link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_text() == "keep\n"


def test_follow_writes_content_through_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("old\n")
    link = tmp_path / "link"
    link.symlink_to("real")
    converge(File(str(link), content="new\n", follow=True))
    assert link.is_symlink() and target.read_text() == "new\n"


def test_without_follow_content_replaces_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("old\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    converge(File(str(link), content="new\n"))
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert target.read_text() == "old\n"


def test_a_mode_only_file_on_a_symlink_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("keep\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ResourceError, match="set follow: true to manage what it points to"):
        check(File(str(link), mode="0600"))
    converge(File(str(link), mode="0600", force=True))
    assert not link.is_symlink() and link.read_bytes() == b""
    assert target.read_text() == "keep\n"


# -- parents --------------------------------------------------------------------------


def test_missing_parents_are_named_under_noop_and_nothing_is_made(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f"
    summary = noop_changes_nothing(tmp_path, File(str(path), content="x", parents=True))
    assert summary == f"created (and directories {tmp_path / 'a'}, {tmp_path / 'a' / 'b'})"
    summary = noop_changes_nothing(tmp_path, File(str(path), content="x"))
    assert summary.startswith(f"created, once {tmp_path / 'a'} exists")


def test_a_directory_in_a_missing_parent_needs_parents_too(tmp_path: Path) -> None:
    path = tmp_path / "a" / "d"
    resource = File(str(path), state="directory")
    change = check(resource)
    assert change is not None
    with pytest.raises(ResourceError, match="or set parents: true"):
        apply(resource, change)
    converge(File(str(path), state="directory", parents=True))
    assert path.is_dir()


def test_a_managed_parent_directory_comes_first_in_a_real_run(tmp_path: Path) -> None:
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(tmp_path / "a" / "f"), content="x"))
    graph.add(File(str(tmp_path / "a"), state="directory"))
    engine = Engine(graph, converged_timeout=0)
    result = asyncio.run(asyncio.wait_for(engine.run(), 10))
    assert result.failed == 0
    assert (tmp_path / "a" / "f").read_text() == "x"


# -- what a link leads to is watched ----------------------------------------------------


def test_drift_of_a_followed_target_and_of_a_hard_links_target_is_repaired(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.write_text("r\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    data = tmp_path / "data"
    data.write_text("d\n")
    alias = tmp_path / "alias"
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(link), mode="0640", follow=True))
    graph.add(File(str(alias), state="hard", target=str(data), force=True))
    reports = Reports()

    async def drift(action: Any, resource: str, expect: str) -> None:
        mark = len(reports.items)
        action()
        while True:
            changed = await reports.next(Changed, mark)
            mark = reports.items.index(changed) + 1
            if changed.resource == resource:
                assert changed.summary == expect
                return

    def replace_data() -> None:
        (tmp_path / "data.new").write_text("d2\n")
        os.rename(tmp_path / "data.new", data)

    async def main() -> None:
        engine = Engine(graph, reporter=reports)
        task = asyncio.create_task(engine.run())
        try:
            await reports.next(Converged, 0)
            await drift(lambda: real.chmod(0o600), f"file[{link}]", "mode 0600 -> 0640")
            assert stat.S_IMODE(real.stat().st_mode) == 0o640 and link.is_symlink()
            await drift(replace_data, f"file[{alias}]", "replaced file with link")
            assert alias.stat().st_ino == data.stat().st_ino
        finally:
            engine.stop()
            result = await asyncio.wait_for(task, 10)
        assert result.failed == 0

    asyncio.run(asyncio.wait_for(main(), 60))


@needs_root
def test_follow_never_follows_a_users_link_into_roots_files(tmp_path: Path) -> None:
    root = lab(tmp_path)
    secret = root / "secret"
    secret.write_text("private\n")
    secret.chmod(0o600)
    home = root / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    link = home / "notes"
    run_as_nobody(lambda: os.symlink(str(secret), str(link)))
    with pytest.raises(ResourceError, match=r"unsafe path: the symlink .*notes is owned by"):
        converge(File(str(link), mode="0644", owner=str(NOBODY), follow=True))
    st = secret.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
