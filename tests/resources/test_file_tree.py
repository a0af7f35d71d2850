"""``file`` trees: ``recurse``, ``source`` (a directory) and ``purge`` on real trees; each
the change, a clean second run and noop changing nothing; and a local user (uid 65534)
swapping symlinks into a tree being walked never steers the agent out of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Engine
from convergent.errors import ResourceError
from convergent.graph import Graph
from convergent.resources.base import Context, Resource
from convergent.resources.file import File
from tests.host.hostile import NOBODY, Hostile, exchange, lab, needs_root
from tests.resources.test_file import Reports, converge
from tests.resources.test_file_links import noop_changes_nothing


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def make_tree(top: Path) -> None:
    (top / "sub" / "deep").mkdir(parents=True)
    (top / "a").write_text("a\n")
    (top / "sub" / "b").write_text("b\n")
    (top / "sub" / "deep" / "c").write_text("c\n")
    (top / "tool").write_text("#!/bin/sh\n")
    for path in (top / "a", top / "sub" / "b", top / "sub" / "deep" / "c"):
        path.chmod(0o600)
    (top / "tool").chmod(0o700)
    for path in (top, top / "sub", top / "sub" / "deep"):
        path.chmod(0o700)


# -- recurse --------------------------------------------------------------------------


def test_recurse_applies_an_octal_mode_below_giving_directories_search(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    top.mkdir()
    make_tree(top)
    resource = File(str(top), state="directory", mode="0644", recurse=True)
    summary = noop_changes_nothing(tmp_path, resource)
    assert summary == "mode 0700 -> 0755, 6 files updated"
    change = converge(resource)
    assert change is not None and change.summary == summary
    assert change.diff is not None and "updated sub/deep/c\n" in change.diff
    assert [mode_of(top / p) for p in ("sub", "sub/deep", "a", "sub/deep/c", "tool")] == [
        0o755,
        0o755,
        0o644,
        0o644,
        0o644,
    ]


def test_recurse_with_a_symbolic_mode_follows_chmod_x_rules(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    top.mkdir()
    make_tree(top)
    converge(File(str(top), state="directory", mode="go+rX", recurse=True))
    assert mode_of(top / "sub") == 0o755
    assert mode_of(top / "a") == 0o644
    assert mode_of(top / "tool") == 0o755  # executable for its owner: X gives it to all


def test_recurse_sets_the_owner_below_and_never_touches_symlinks(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    top.mkdir()
    make_tree(top)
    outside = tmp_path / "outside"
    outside.write_text("keep\n")
    outside.chmod(0o600)
    (top / "sub" / "link").symlink_to(outside)
    converge(File(str(top), state="directory", owner=str(NOBODY), recurse=True))
    assert (top / "sub" / "deep" / "c").stat().st_uid == NOBODY
    assert (top / "sub" / "link").lstat().st_uid == 0
    assert outside.stat().st_uid == 0 and mode_of(outside) == 0o600


# -- source: a directory, and purge ---------------------------------------------------


def test_a_source_directory_is_copied_with_content_modes_and_links(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    (source / "sub" / "rel").symlink_to("deep/c")
    dest = tmp_path / "dest"
    resource = File(str(dest), state="directory", source=str(source))
    summary = noop_changes_nothing(tmp_path, resource)
    assert summary == "directory created; 7 files created"
    converge(resource)
    assert (dest / "sub" / "deep" / "c").read_text() == "c\n"
    assert mode_of(dest / "tool") == 0o700 and mode_of(dest / "sub") == 0o700
    assert os.readlink(dest / "sub" / "rel") == "deep/c"
    (source / "a").write_text("changed\n")
    (source / "sub" / "b").write_text("changed\n")
    (source / "sub" / "deep" / "c").chmod(0o640)
    change = converge(resource)
    assert change is not None and change.summary == "3 files updated"
    assert (dest / "a").read_text() == "changed\n"
    assert mode_of(dest / "sub" / "deep" / "c") == 0o640


def test_purge_removes_what_the_source_lacks_and_reports_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    dest = tmp_path / "dest"
    converge(File(str(dest), state="directory", source=str(source)))
    (dest / "stray").write_text("x")
    (dest / "sub" / "olddir").mkdir()
    (dest / "sub" / "olddir" / "f").write_text("x")
    (source / "a").write_text("new\n")
    resource = File(str(dest), state="directory", source=str(source), purge=True)
    summary = noop_changes_nothing(tmp_path, resource)
    assert summary == "1 file updated, 2 removed"
    converge(resource)
    assert not (dest / "stray").exists() and not (dest / "sub" / "olddir").exists()
    assert (dest / "a").read_text() == "new\n"


def test_without_purge_extra_files_stay(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine").write_text("stay")
    converge(File(str(dest), state="directory", source=str(source)))
    assert (dest / "mine").read_text() == "stay"


@pytest.mark.parametrize("tree_first", [True, False])
def test_purge_leaves_what_another_resource_manages(tmp_path: Path, tree_first: bool) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a")
    dest = tmp_path / "dest"
    (dest / "local").mkdir(parents=True)
    (dest / "local" / "extra.conf").write_text("mine\n")
    (dest / "stray").write_text("x")
    tree = File(str(dest), state="directory", source=str(source), purge=True)
    inner = File(str(dest / "local" / "extra.conf"), content="mine\n")
    graph: Graph[Resource[Any]] = Graph()
    for resource in (tree, inner) if tree_first else (inner, tree):
        graph.add(resource)
    reports: list[Any] = []
    engine = Engine(graph, converged_timeout=0, reporter=reports.append)
    result = asyncio.run(asyncio.wait_for(engine.run(), 10))
    assert result.failed == 0
    changed = {r.resource: r.summary for r in reports if isinstance(r, Changed)}
    assert changed == {tree.id: "1 file created, 1 removed"}  # a, and stray; not local/
    assert (dest / "local" / "extra.conf").read_text() == "mine\n"
    assert not (dest / "stray").exists()


def test_a_file_as_source_of_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_text("x")
    with pytest.raises(ResourceError, match="not a directory"):
        converge(File(str(tmp_path / "d"), state="directory", source=str(source)))


# -- a hostile user racing the walk ---------------------------------------------------

ROUNDS = 150


def _ctx(resource: File) -> Context:
    return Context(
        resource.id, ready=lambda: None, event=lambda: None, log=lambda m: None,
        shared=lambda factory: factory(),
    )  # fmt: skip


def _apply_once(resource: File) -> None:
    async def main() -> None:
        ctx = _ctx(resource)
        change = await resource.check(ctx)
        if change is not None:
            await resource.apply(ctx, change)

    with contextlib.suppress(ResourceError, OSError):
        asyncio.run(main())  # a walk that met the racer half way may fail, never go astray


def _hostile_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tree owned by nobody with a subdirectory and, beside it, nobody's symlink to a
    root-owned directory holding a private file."""
    root = lab(tmp_path)
    secret = root / "secret"
    secret.mkdir(mode=0o700)
    (secret / "key").write_text("private\n")
    (secret / "key").chmod(0o600)
    top = root / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f").write_text("x")
    (top / "bait").symlink_to(secret)
    for path in (top, top / "sub", top / "sub" / "f"):
        os.lchown(path, NOBODY, NOBODY)
    os.lchown(top / "bait", NOBODY, NOBODY)
    return top, secret, secret / "key"


def _swap(a: Path, b: Path) -> Any:
    def work(stopped: Any) -> int:
        swaps = tries = 0
        while tries < 2_000_000 and (tries % 256 or not stopped()):
            swaps += exchange(str(a), str(b))
            tries += 1
        return swaps

    return work


def _untouched(secret: Path, key: Path) -> None:
    for path, mode in ((secret, 0o700), (key, 0o600)):
        st = path.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), path
    assert key.read_text() == "private\n"


@needs_root
@pytest.mark.timeout(120)
def test_recurse_never_follows_a_symlink_swapped_in_for_a_directory(tmp_path: Path) -> None:
    top, secret, key = _hostile_tree(tmp_path)
    modes = ("0644", "0600")
    with Hostile(_swap(top / "sub", top / "bait")) as user:
        for n in range(ROUNDS):
            mode, group = modes[n % 2], str(n % 2)
            resource = File(
                str(top), state="directory", mode=mode, recurse=True, owner="65534", group=group
            )
            _apply_once(resource)
    assert user.result > 0
    _untouched(secret, key)


@needs_root
@pytest.mark.timeout(120)
def test_source_copy_and_purge_never_write_or_delete_through_a_swapped_symlink(
    tmp_path: Path,
) -> None:
    top, secret, key = _hostile_tree(tmp_path)
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "key").write_text("from source\n")
    (source / "sub" / "f").write_text("y")
    with Hostile(_swap(top / "sub", top / "bait")) as user:
        for n in range(ROUNDS):
            (source / "sub" / "f").write_text(str(n))
            _apply_once(File(str(top), state="directory", source=str(source), purge=n % 2 == 0))
    assert user.result > 0
    _untouched(secret, key)
    assert sorted(os.listdir(secret)) == ["key"]


# -- drift below the top is an event ----------------------------------------------------


def test_drift_deep_in_a_tree_and_in_its_source_is_repaired_as_it_happens(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source)
    dest = tmp_path / "dest"
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(dest), state="directory", source=str(source)))
    graph.add(File(str(tmp_path / "perm"), state="directory", mode="0750", recurse=True))
    (tmp_path / "perm" / "x" / "y").mkdir(parents=True)
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

    async def main() -> None:
        engine = Engine(graph, reporter=reports)
        task = asyncio.create_task(engine.run())
        try:
            await reports.next(Converged, 0)
            await drift(
                lambda: (dest / "sub" / "deep" / "c").write_text("edited\n"),
                f"file[{dest}]",
                "1 file updated",
            )
            assert (dest / "sub" / "deep" / "c").read_text() == "c\n"
            await drift(
                lambda: (source / "sub" / "deep" / "new").write_text("n\n"),
                f"file[{dest}]",
                "1 file created",
            )
            assert (dest / "sub" / "deep" / "new").read_text() == "n\n"
            await drift(
                lambda: (tmp_path / "perm" / "x" / "y").chmod(0o700),
                f"file[{tmp_path / 'perm'}]",
                "1 file updated",
            )
            assert mode_of(tmp_path / "perm" / "x" / "y") == 0o750
        finally:
            engine.stop()
            result = await asyncio.wait_for(task, 10)
        assert result.failed == 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_missing_source_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match=r"source .*/nowhere does not exist; create it"):
        converge(File(str(tmp_path / "d"), state="directory", source=str(tmp_path / "nowhere")))
    assert not (tmp_path / "d").exists()
