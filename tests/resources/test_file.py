"""The ``file`` kind on real files in tmp_path, alone and through the real engine."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import stat
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from convergent.engine import Changed, Converged, Engine, Failed, Report, WouldChange
from convergent.errors import ParamError, ResourceError
from convergent.graph import Graph
from convergent.resources.base import Change, Context, Resource
from convergent.resources.file import DIFF_LIMIT, File, FileChange

TIMEOUT = 5.0
NOBODY = 65534


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def context(resource: File) -> Context:
    return Context(
        resource.id,
        ready=lambda: None,
        event=lambda: None,
        log=lambda message: None,
        shared=lambda factory: factory(),
    )


def check(resource: File) -> FileChange | None:
    return asyncio.run(resource.check(context(resource)))


def apply(resource: File, change: Change) -> None:
    asyncio.run(resource.apply(context(resource), change))


def converge(resource: File) -> FileChange | None:
    """Check, apply what was found, and make sure a second check is clean."""
    change = check(resource)
    if change is not None:
        apply(resource, change)
    assert check(resource) is None
    return change


# -- exists -------------------------------------------------------------------------------


def test_missing_file_is_created_with_content_and_default_mode(tmp_path: Path) -> None:
    target = tmp_path / "motd"
    change = converge(File(str(target), content="hello\n"))
    assert change is not None
    assert change.summary == "created"
    assert target.read_text() == "hello\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def test_created_file_change_carries_a_diff(tmp_path: Path) -> None:
    change = check(File(str(tmp_path / "f"), content="one\ntwo\n"))
    assert change is not None
    assert change.diff is not None
    assert "+one\n+two\n" in change.diff
    assert f"+++ {tmp_path / 'f'}" in change.diff


def test_file_without_content_is_created_empty(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    change = converge(File(str(target)))
    assert change is not None and change.summary == "created"
    assert target.read_bytes() == b""


def test_missing_parents_are_refused_and_nothing_is_made(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f"
    resource = File(str(target), content="deep")
    change = check(resource)
    assert change is not None
    assert change.summary == (
        f"created, once {tmp_path / 'a'} exists (missing: manage it with state: directory, "
        "or set parents: true)"
    )
    with pytest.raises(ResourceError, match=f"the directory {tmp_path / 'a'} does not exist; "):
        apply(resource, change)
    assert not (tmp_path / "a").exists()


def test_missing_parents_are_created_and_named_with_parents_true(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f"
    change = converge(File(str(target), content="deep", parents=True))
    assert change is not None
    assert change.summary == f"created (and directories {tmp_path / 'a'}, {tmp_path / 'a' / 'b'})"
    assert target.read_text() == "deep"
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o777 & ~_umask()


def test_changed_content_is_described_by_a_unified_diff(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("a\nold\nc\n")
    change = converge(File(str(target), content="a\nnew\nc\n"))
    assert change is not None
    assert change.summary == "content changed"
    assert change.diff is not None
    assert f"--- {target}\n+++ {target}\n" in change.diff
    assert "-old\n+new\n" in change.diff
    assert target.read_text() == "a\nnew\nc\n"


def test_missing_final_newline_is_marked_in_the_diff(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x\n")
    change = check(File(str(target), content="x"))
    assert change is not None and change.diff is not None
    assert "\\ No newline at end of file" in change.diff


def test_binary_content_gets_a_one_line_note(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"\xff\xfe\x00binary")
    target = tmp_path / "copy"
    target.write_text("text\n")
    change = check(File(str(target), source=str(source)))
    assert change is not None
    assert change.diff == "binary content differs"


def test_large_content_gets_a_note_instead_of_a_diff(tmp_path: Path) -> None:
    target = tmp_path / "big"
    target.write_text("x" * (DIFF_LIMIT + 1))
    change = converge(File(str(target), content="small\n"))
    assert change is not None and change.diff is not None
    assert "\n" not in change.diff.strip()
    assert "too large" in change.diff
    assert target.read_text() == "small\n"


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("same\n")
    target.chmod(0o600)
    before = target.stat()
    assert check(File(str(target), content="same\n")) is None
    # Only the mode differs: chmod in place, same inode, same content timestamp.
    change = converge(File(str(target), content="same\n", mode="0644"))
    assert change is not None
    assert change.summary == "mode 0600 -> 0644"
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stat.S_IMODE(after.st_mode) == 0o644


def test_rewritten_file_keeps_its_mode_and_owner_when_not_given(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    target.chmod(0o640)
    os.chown(target, NOBODY, NOBODY)
    converge(File(str(target), content="new"))
    st = target.stat()
    assert target.read_text() == "new"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_mode_is_set_on_a_new_file_despite_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "f"
    converge(File(str(target), content="x", mode="0666"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o666


def test_numeric_owner_and_group_are_applied(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    os.chown(target, 0, 0)
    change = converge(File(str(target), owner=str(NOBODY), group=str(NOBODY)))
    assert change is not None
    assert change.summary == f"owner 0 -> {NOBODY}, group 0 -> {NOBODY}"
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_owner_and_group_names_are_resolved_and_shown(tmp_path: Path) -> None:
    user = pwd.getpwuid(NOBODY).pw_name
    group = grp.getgrgid(NOBODY).gr_name
    target = tmp_path / "f"
    target.write_text("x")
    os.chown(target, 0, 0)
    change = converge(File(str(target), owner=user, group=group))
    assert change is not None
    assert change.summary == f"owner root -> {user}, group root -> {group}"
    assert (target.stat().st_uid, target.stat().st_gid) == (NOBODY, NOBODY)


def test_unknown_owner_is_an_error_from_check_naming_it(tmp_path: Path) -> None:
    resource = File(str(tmp_path / "f"), owner="no-such-user-here")
    with pytest.raises(ResourceError, match="no-such-user-here"):
        check(resource)


def test_chown_keeps_setuid_bit(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o4755)
    converge(File(str(target), owner=str(NOBODY)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o4755


def test_source_bytes_are_copied(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(bytes(range(256)))
    target = tmp_path / "dst.bin"
    change = converge(File(str(target), source=str(source)))
    assert change is not None and change.summary == "created"
    assert target.read_bytes() == bytes(range(256))


def test_missing_source_is_an_error_naming_it(tmp_path: Path) -> None:
    resource = File(str(tmp_path / "f"), source=str(tmp_path / "nowhere"))
    with pytest.raises(ResourceError, match="nowhere"):
        check(resource)


def test_symlink_is_replaced_by_a_regular_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep me")
    target = tmp_path / "link"
    target.symlink_to(elsewhere)
    change = converge(File(str(target), content="own"))
    assert change is not None and change.summary == "replaced symlink with file"
    assert not target.is_symlink() and target.read_text() == "own"
    assert elsewhere.read_text() == "keep me"


def test_directory_is_replaced_by_a_file_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(ResourceError, match="force: true"):
        check(File(str(target), content="file now"))
    assert target.is_dir()
    converge(File(str(target), content="file now", force=True))
    assert target.read_text() == "file now"


def test_parent_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ResourceError, match=r"plain is not a directory"):
        check(File(str(tmp_path / "plain" / "f"), content="y"))


# -- atomic writes ------------------------------------------------------------------------


def test_readers_never_see_a_partial_or_empty_file(tmp_path: Path) -> None:
    target = tmp_path / "hot"
    contents = ["A" * 200_000, "B" * 150_000 + "\n"]
    target.write_text(contents[0])
    seen: set[int] = set()
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = target.read_text()
            if data not in contents:
                bad.append(f"{len(data)} bytes starting {data[:10]!r}")
                return
            seen.add(contents.index(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(100):
            converge(File(str(target), content=contents[(i + 1) % 2]))
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not bad, bad[0]
    assert seen == {0, 1}  # the reader really raced the writes


def test_temp_file_is_removed_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    resource = File(str(target), content="x", force=True)
    # A plan that does not clear the directory first: the rename over it fails.
    with pytest.raises(IsADirectoryError):
        apply(resource, FileChange("created", None, "write", b"x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_no_temp_files_are_left_behind(tmp_path: Path) -> None:
    for i in range(5):
        converge(File(str(tmp_path / "f"), content=str(i)))
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# -- absent and directory -----------------------------------------------------------------


def test_absent_removes_a_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    change = converge(File(str(target), state="absent"))
    assert change is not None and change.summary == "removed"
    assert not target.exists()


def test_absent_file_that_is_missing_needs_nothing(tmp_path: Path) -> None:
    assert check(File(str(tmp_path / "nothing"), state="absent")) is None
    assert check(File(str(tmp_path / "no" / "parent"), state="absent")) is None


def test_absent_removes_a_non_empty_directory_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "d"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "f").write_text("x")
    with pytest.raises(ResourceError, match="force: true"):
        check(File(str(target), state="absent"))
    assert target.exists()
    converge(File(str(target), state="absent", force=True))
    assert not target.exists()


def test_absent_removes_an_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    converge(File(str(target), state="absent"))
    assert not target.exists()


def test_directory_is_created_with_mode_and_owner(tmp_path: Path) -> None:
    target = tmp_path / "d"
    change = converge(File(str(target), state="directory", mode="0750", owner=str(NOBODY)))
    assert change is not None and change.summary == "directory created"
    st = target.stat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_uid == NOBODY


def test_existing_directory_mode_is_corrected(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir(mode=0o700)
    change = converge(File(str(target), state="directory", mode="755"))
    assert change is not None and change.summary == "mode 0700 -> 0755"


def test_file_is_replaced_by_a_directory_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.write_text("data")
    with pytest.raises(ResourceError, match="force: true"):
        check(File(str(target), state="directory"))
    assert target.read_text() == "data"
    converge(File(str(target), state="directory", force=True))
    assert target.is_dir()


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"path": "relative/f"}, "path"),
        ({"mode": "644x"}, "mode"),
        ({"mode": "0o644"}, "mode"),
        ({"mode": "99"}, "mode"),
        ({"mode": "0888"}, "mode"),
        ({"content": "a", "source": "/etc/hostname"}, "source"),
        ({"source": "relative/src"}, "source"),
        ({"state": "directory", "content": "x"}, "content"),
        ({"state": "absent", "mode": "0644"}, "mode"),
        ({"owner": ""}, "owner"),
    ],
)
def test_bad_parameters_raise_param_error_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ParamError) as info:
        File("/tmp/convergent-test-never-written", **fields)
    assert info.value.field == field


def test_relative_name_without_path_is_rejected() -> None:
    with pytest.raises(ParamError, match="absolute") as info:
        File("etc/motd", content="x")
    assert info.value.field == "path"


def test_bad_mode_error_shows_the_expected_form() -> None:
    with pytest.raises(ParamError, match='"0644"'):
        File("/tmp/x", mode="rw-r--r--")


def test_path_is_normalised(tmp_path: Path) -> None:
    target = tmp_path / "f"
    converge(File("anything", path=f"{tmp_path}//sub/../f", content="n"))
    assert target.read_text() == "n"


# -- through the engine -------------------------------------------------------------------


class Reports:
    """Collects engine reports; lets a test wait (bounded) for one that matches."""

    def __init__(self) -> None:
        self.items: list[Report] = []
        self._arrived = asyncio.Event()

    def __call__(self, report: Report) -> None:
        self.items.append(report)
        self._arrived.set()

    async def next(self, kind: type[Any], after: int) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for report in self.items[after:]:
                    if isinstance(report, Failed):
                        raise AssertionError(f"unexpected failure: {report.error}")
                    if isinstance(report, kind):
                        return report
                self._arrived.clear()
                await self._arrived.wait()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def test_drift_is_repaired_through_the_engine(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app.conf"
    source = tmp_path / "template"
    source.write_text("from source\n")
    copied = tmp_path / "etc" / "copy.conf"
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(target.parent), state="directory", mode="0755"))
    conf = File(str(target), content="key = 1\n", mode="0644")
    graph.add(conf, require=[f"file[{target.parent}]"])
    graph.add(File(str(copied), source=str(source)))
    reports = Reports()

    async def drift(action: Any, expect: str) -> None:
        mark = len(reports.items)
        action()
        changed = await reports.next(Changed, mark)
        assert changed.summary == expect
        await reports.next(Converged, mark)

    async def main() -> None:
        engine = Engine(graph, reporter=reports)
        task = asyncio.create_task(engine.run())
        try:
            await reports.next(Converged, 0)
            assert target.read_text() == "key = 1\n"
            assert copied.read_text() == "from source\n"

            await drift(target.unlink, "created")
            assert target.read_text() == "key = 1\n"

            await drift(lambda: target.write_text("key = 2\n"), "content changed")
            assert target.read_text() == "key = 1\n"

            await drift(lambda: target.chmod(0o600), "mode 0600 -> 0644")
            assert stat.S_IMODE(target.stat().st_mode) == 0o644

            await drift(lambda: source.write_text("new source\n"), "content changed")
            assert copied.read_text() == "new source\n"
        finally:
            engine.stop()
            result = await asyncio.wait_for(task, TIMEOUT)
        assert result.failed == 0

    run(main())


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | str]]:
    """Every entry under root: mode, owner, mtime and content (or link target)."""
    entries: dict[str, tuple[int, int, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                body: bytes | str = Path(path).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            else:
                body = ""
            entries[path] = (st.st_mode, st.st_uid, st.st_mtime_ns, body)
    return entries


def test_noop_reports_would_change_and_never_mutates(tmp_path: Path) -> None:
    (tmp_path / "wrong").write_text("old\n")
    (tmp_path / "doomed").write_text("bye")
    (tmp_path / "meta").write_text("m")
    (tmp_path / "meta").chmod(0o600)
    graph: Graph[Resource[Any]] = Graph()
    graph.add(File(str(tmp_path / "wrong"), content="new\n"))
    graph.add(File(str(tmp_path / "missing" / "f"), content="x", parents=True))
    graph.add(File(str(tmp_path / "doomed"), state="absent"))
    graph.add(File(str(tmp_path / "meta"), mode="0644", owner=str(NOBODY)))
    graph.add(File(str(tmp_path / "newdir"), state="directory"))
    before = snapshot(tmp_path)
    reports = Reports()

    async def main() -> None:
        engine = Engine(graph, noop=True, converged_timeout=0, reporter=reports)
        result = await asyncio.wait_for(engine.run(), TIMEOUT)
        assert result.failed == 0

    run(main())
    assert snapshot(tmp_path) == before
    would: dict[str, Change] = {
        r.resource: r.change
        for r in reports.items
        if isinstance(r, WouldChange) and r.change is not None
    }
    assert would[f"file[{tmp_path / 'wrong'}]"].summary == "content changed"
    assert "-old\n+new\n" in (would[f"file[{tmp_path / 'wrong'}]"].diff or "")
    assert would[f"file[{tmp_path / 'missing' / 'f'}]"].summary == (
        f"created (and directories {tmp_path / 'missing'})"
    )
    assert would[f"file[{tmp_path / 'doomed'}]"].summary == "removed"
    assert would[f"file[{tmp_path / 'meta'}]"].summary == f"mode 0600 -> 0644, owner 0 -> {NOBODY}"
    assert would[f"file[{tmp_path / 'newdir'}]"].summary == "directory created"
    assert not any(isinstance(r, Changed) for r in reports.items)


@pytest.mark.parametrize(
    ("field", "what", "number"), [("owner", "user", "uid"), ("group", "group", "gid")]
)
def test_unknown_owner_or_group_is_an_error_naming_it_and_changes_nothing(
    tmp_path: Path, field: str, what: str, number: str
) -> None:
    target = tmp_path / "f"
    resource = File(str(target), content="x\n", **{field: "no-such-name-here"})
    with pytest.raises(ResourceError) as info:
        converge(resource)
    assert str(info.value) == (
        f"file[{target}]: {field}: there is no {what} 'no-such-name-here' on this host; "
        f"create the {what} first (and require it) or give a numeric {number}"
    )
    assert not target.exists()


# -- content it was not asked to manage ---------------------------------------------------


def test_a_file_with_only_mode_never_replaces_a_symlink_with_an_empty_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ResourceError, match=f"{link} is a symlink; a file without content"):
        check(File(str(link), mode="0644"))
    assert link.is_symlink()
    assert target.read_text() == "keep me\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_file_without_content_or_source_keeps_the_bytes_it_has(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("data\n")
    target.chmod(0o600)
    change = converge(File(str(target), mode="0640"))
    assert change is not None and change.summary == "mode 0600 -> 0640"
    assert target.read_text() == "data\n"


def test_a_fifo_at_the_path_is_replaced_only_with_force(tmp_path: Path) -> None:
    target = tmp_path / "pipe"
    os.mkfifo(target)
    with pytest.raises(ResourceError, match=f"{target} is a fifo; set force: true"):
        check(File(str(target), content="x\n"))
    change = converge(File(str(target), content="x\n", force=True))
    assert change is not None and change.summary == "replaced fifo with file"
    assert target.read_text() == "x\n"
