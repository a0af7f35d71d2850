"""Another user's bytes are never given to a new owner, or made setuid/setgid, in place.

A file a local user may have written (hers, or writable by its group or others) sits
at a path the root agent manages with ``owner: root`` and ``mode: "4755"``. A chown and
chmod of that file in place would make her program a root-owned setuid one: the bytes
checked a moment before need not be the bytes chowned (she rewrites them through a
descriptor she keeps, or swaps the name between the check and the apply). So:

- ``file`` with content or source, and ``download``, replace such a file with a new
  one of their own content (a new inode: her descriptor writes to the old one);
- ``file`` without content refuses to make such a file setuid or setgid;
- the setuid and setgid bits of such a file are not carried to a new owner or group;
- a file swapped in between the check and the apply is refused, not chowned;
- a change that makes such a file look as trusted as root's own (root's, written by
  no one else) makes a new file too: her descriptors and shared maps (writes through
  which keep a setuid bit) would keep writing the old one. So do trees (``recurse``,
  ``source``) and ``cron`` entries;
- a file that stays hers (no ``owner``) is not made setgid for a group it did not have.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent.errors import ResourceError
from convergent.resources.cron import Cron
from convergent.resources.download import Download
from convergent.resources.file import File
from tests.host.hostile import NOBODY, lab, needs_root, run_as_nobody
from tests.resources.httpserver import Server
from tests.resources.kinds import apply, check, converge

pytestmark = needs_root
BODY = b"#!/bin/sh\necho the tool\n"
SUM = hashlib.sha256(BODY).hexdigest()
HERS = b"#!/bin/sh\nid\n"


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as running:
        running.files["/tool"] = BODY
        yield running


def _planted(directory: Path, name: str, data: bytes, mode: int, uid: int = NOBODY) -> Path:
    path = directory / name
    path.write_bytes(data)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def _kinds(server: Server, path: Path, **fields: Any) -> dict[str, Any]:
    return {
        "download": Download(str(path), url=server.url("/tool"), sha256=SUM, **fields),
        "file": File(str(path), content=BODY.decode(), **fields),
    }


def _made_anew(target: Path, resource: Any) -> Any:
    """Converge ``resource`` while she holds a descriptor of ``target`` open for writing
    (then writes through it): the path ends a new root-owned setuid file of BODY."""
    before = target.stat()
    her_descriptor = os.open(target, os.O_WRONLY)
    try:
        change = converge(resource)
        os.write(her_descriptor, HERS)
    finally:
        os.close(her_descriptor)
    after = target.stat()
    assert after.st_ino != before.st_ino
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o4755)
    assert target.read_bytes() == BODY
    return change


@pytest.mark.parametrize("kind", ["download", "file"])
@pytest.mark.parametrize("owner", ["hers", "group-writable"])
def test_a_file_another_user_may_write_gets_a_new_copy_for_its_new_owner(
    server: Server, tmp_path: Path, kind: str, owner: str
) -> None:
    """Her file already holds the right bytes: only owner and mode differ. The result is
    a new root-owned setuid file; what she writes through her descriptor goes to the
    old one."""
    if owner == "hers":
        target = _planted(tmp_path, "tool", BODY, 0o644)
    else:
        target = _planted(tmp_path, "tool", BODY, 0o664, uid=0)
    change = _made_anew(target, _kinds(server, target, owner="root", mode="4755")[kind])
    assert change is not None and "(a new " in change.summary, change


@pytest.mark.parametrize("kind", ["download", "file"])
def test_her_setuid_bit_is_not_carried_to_a_new_owner(
    server: Server, tmp_path: Path, kind: str
) -> None:
    target = _planted(tmp_path, "tool", HERS, 0o4755)
    converge(_kinds(server, target, owner="root")[kind])
    after = target.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o755)
    assert target.read_bytes() == BODY


def test_a_file_without_content_is_not_made_setuid_for_another_owner(tmp_path: Path) -> None:
    target = _planted(tmp_path, "tool", HERS, 0o755)
    with pytest.raises(ResourceError) as caught:
        check(File(str(target), owner="root", mode="4755"))
    assert "does not make it setuid or setgid" in str(caught.value)
    assert "it belongs to uid 65534" in str(caught.value)
    after = target.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (NOBODY, 0o755)


def test_a_file_without_content_given_to_root_loses_her_setuid_bit(tmp_path: Path) -> None:
    """chown(2) clears the bits; convergent does not put hers back for root."""
    target = _planted(tmp_path, "tool", HERS, 0o4755)
    converge(File(str(target), owner="root"))
    after = target.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o755)


def test_a_root_file_keeps_its_setuid_bit_for_a_new_group(tmp_path: Path) -> None:
    """Only the agent could have set the bit of a root-owned file nobody else may write:
    a new group keeps it (chown clears it; it is set again)."""
    target = _planted(tmp_path, "tool", BODY, 0o4755, uid=0)
    converge(File(str(target), group=str(NOBODY)))
    after = target.stat()
    assert (after.st_gid, stat.S_IMODE(after.st_mode)) == (NOBODY, 0o4755)


@pytest.mark.parametrize("kind", ["download", "file"])
def test_a_file_swapped_in_between_check_and_apply_is_not_made_setuid(
    server: Server, tmp_path: Path, kind: str
) -> None:
    """The check sees root's file with the right bytes (a mode change in place is safe);
    then she renames her own copy over it (she may write the directory). The apply
    finds her file and refuses; the next check replaces it with a new copy."""
    target = _planted(tmp_path, "tool", BODY, 0o755, uid=0)
    resource = _kinds(server, target, owner="root", mode="4755")[kind]
    change = check(resource)
    assert change is not None and "(a new " not in change.summary
    hers = _planted(tmp_path, "hers", BODY, 0o755)
    os.rename(hers, target)
    with pytest.raises(ResourceError) as caught:
        apply(resource, change)
    assert "was replaced or made writable since its check" in str(caught.value)
    after = target.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (NOBODY, 0o755)
    converge(resource)
    after = target.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o4755)
    assert target.read_bytes() == BODY


def test_a_tree_given_to_root_keeps_none_of_her_setuid_bits(tmp_path: Path) -> None:
    """``recurse`` owns no bytes: files are chowned in place (a service's open log
    stays its log), and chown's clearing of setuid is not undone for her file."""
    tree = tmp_path / "t"
    tree.mkdir()
    os.chown(tree, NOBODY, NOBODY)
    evil = _planted(tree, "evil", HERS, 0o4755)
    converge(File(str(tree), state="directory", recurse=True, owner="root", group="root"))
    after = evil.stat()
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (0, 0o755)
    _planted(tree, "plain", HERS, 0o755)
    with pytest.raises(ResourceError) as caught:
        converge(File(str(tree), state="directory", recurse=True, owner="root", mode="4755"))
    assert "not made setuid or setgid" in str(caught.value), caught.value
    assert stat.S_IMODE((tree / "plain").stat().st_mode) == 0o755


def test_a_copied_tree_over_her_identical_file_makes_a_new_file(tmp_path: Path) -> None:
    source, tree = tmp_path / "src", tmp_path / "t"
    source.mkdir()
    (source / "tool").write_bytes(BODY)
    (source / "tool").chmod(0o4755)
    tree.mkdir()
    theirs = _planted(tree, "tool", BODY, 0o755)
    _made_anew(theirs, File(str(tree), state="directory", source=str(source), owner="root"))


@pytest.mark.parametrize("kind", ["download", "file"])
def test_a_file_that_stays_hers_is_not_made_setgid_for_another_group(
    server: Server, tmp_path: Path, kind: str
) -> None:
    target = _planted(tmp_path, "tool", HERS, 0o755)
    with pytest.raises(ResourceError) as caught:
        converge(_kinds(server, target, group="root", mode="2755")[kind])
    assert f"it would stay uid {NOBODY}'s" in str(caught.value)
    after = target.stat()
    assert (after.st_gid, stat.S_IMODE(after.st_mode)) == (NOBODY, 0o755)


def test_a_file_others_may_write_made_roots_own_is_a_new_file(tmp_path: Path) -> None:
    """Only the mode changes (0666 -> 0644, root's already): in place, a descriptor she
    opened while she could write would keep adding lines root's cron runs."""
    resource = Cron("job", cmd="/bin/true", cron_dir=str(tmp_path))
    converge(resource)
    entry = tmp_path / "job"
    entry.chmod(0o666)
    before = entry.stat()
    her_descriptor = os.open(entry, os.O_WRONLY | os.O_APPEND)
    try:
        change = converge(resource)
        assert change is not None and "(a new file: " in change.summary
        os.write(her_descriptor, b"* * * * * root /tmp/evil\n")
    finally:
        os.close(her_descriptor)
    assert entry.stat().st_ino != before.st_ino
    assert b"/tmp/evil" not in entry.read_bytes()
    assert stat.S_IMODE(entry.stat().st_mode) == 0o644


def test_her_setgid_bit_without_group_execute_is_dropped_at_a_chown(tmp_path: Path) -> None:
    """chown(2) keeps S_ISGID when S_IXGRP is not set; the agent drops it itself, so a
    later g+x cannot make her bytes a program of root's group."""
    target = _planted(tmp_path, "f", HERS, 0o2644)
    converge(File(str(target), group="root"))
    assert (target.stat().st_gid, stat.S_IMODE(target.stat().st_mode)) == (0, 0o644)
    converge(File(str(target), mode="g+x"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o654


def test_a_source_tree_does_not_make_her_file_setgid_for_roots_group(tmp_path: Path) -> None:
    source, tree = tmp_path / "src", tmp_path / "t"
    source.mkdir()
    (source / "f").write_bytes(BODY)
    (source / "f").chmod(0o2755)
    tree.mkdir()
    theirs = _planted(tree, "f", HERS, 0o644)
    with pytest.raises(ResourceError) as caught:
        converge(File(str(tree), state="directory", source=str(source), group="root"))
    assert f"it would stay uid {NOBODY}'s" in str(caught.value)
    assert (theirs.read_bytes(), theirs.stat().st_gid) == (HERS, NOBODY)


def test_a_symbolic_setuid_mode_never_keeps_her_write_bits(tmp_path: Path) -> None:
    target = _planted(tmp_path, "f", HERS, 0o777)
    with pytest.raises(ResourceError) as caught:
        converge(File(str(target), content=BODY.decode(), owner="root", mode="u+s"))
    assert "setuid or setgid and writable by others" in str(caught.value)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777


def test_a_setgid_file_of_roots_is_made_less_writable_in_place(tmp_path: Path) -> None:
    """Its bit was there already: taking write access away gives it nothing."""
    tree = tmp_path / "games"
    tree.mkdir()
    shared = _planted(tree, "b", BODY, 0o2775, uid=0)
    _planted(tree, "a", BODY, 0o666, uid=0)
    converge(File(str(tree), state="directory", recurse=True, mode="go-w"))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2755
    assert stat.S_IMODE((tree / "a").stat().st_mode) == 0o644


def test_noop_refuses_a_download_setgid_for_her_as_the_run_does(
    server: Server, tmp_path: Path
) -> None:
    target = _planted(tmp_path, "tool", HERS, 0o755)
    with pytest.raises(ResourceError) as caught:
        check(Download(str(target), url=server.url("/tool"), sha256=SUM, group="root", mode="2755"))
    assert f"it would stay uid {NOBODY}'s" in str(caught.value)


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A POSIX ACL as the kernel stores it (``system.posix_acl_access``)."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_a_line_edit_keeps_the_files_acl_and_grants_its_group_nothing(tmp_path: Path) -> None:
    """The group bits of a file with an ACL are the ACL's mask: a new file with the same
    mode and no ACL would give the owning group what only the named user had."""
    from convergent.resources.line import Line

    undefined = 0xFFFFFFFF
    acl = _acl(
        (0x01, 6, undefined),  # user::rw-
        (0x02, 4, 1),  # user:daemon:r--
        (0x04, 0, undefined),  # group::---
        (0x10, 4, undefined),  # mask::r--
        (0x20, 0, undefined),  # other::---
    )
    target = _planted(lab(tmp_path), "app.env", b"token=abc\n", 0o600, uid=0)
    os.chown(target, 0, NOBODY)
    os.setxattr(target, "system.posix_acl_access", acl)
    converge(Line("acl", path=str(target), text="x=2"))
    assert target.read_text() == "token=abc\nx=2\n"

    def read() -> str:
        try:
            return target.read_text()
        except PermissionError:
            return "refused"

    assert run_as_nobody(read) == "refused"
    assert os.getxattr(target, "system.posix_acl_access") == acl
