"""host/fileid.py: a file's identity, the same through a descriptor and through its
name, and never the identity of a later file that took over its inode number."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from convergent.host import fileid


def test_a_file_is_the_same_through_its_descriptor_and_its_name(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert fileid.of_fd(fd) == fileid.of_path(str(path))
        os.rename(path, tmp_path / "g")  # a rename keeps the file
        assert fileid.of_fd(fd) == fileid.of_path(str(tmp_path / "g"))
    finally:
        os.close(fd)


def test_a_later_file_with_the_freed_inode_number_is_another_file(tmp_path: Path) -> None:
    """ext4 gives a freed inode number to the next file made: the number is the same, the
    identity is not (the file handle holds the inode's generation)."""
    first = tmp_path / "first"
    first.write_bytes(b"1")
    number, identity = first.stat().st_ino, fileid.of_path(str(first))
    assert identity is not None
    if not fileid.unique(identity):
        pytest.skip("no file handles here (overlayfs?): the caller holds the file instead")
    first.unlink()
    later = tmp_path / "later"
    later.write_bytes(b"2")
    if later.stat().st_ino != number:
        pytest.skip(f"this file system did not reuse inode {number} at once (ext4 does)")
    assert fileid.of_path(str(later)) != identity


def test_a_symlink_is_itself_never_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    assert fileid.of_path(str(tmp_path / "link")) != fileid.of_path(str(target))


def test_nothing_at_the_name_has_no_identity(tmp_path: Path) -> None:
    assert fileid.of_path(str(tmp_path / "missing")) is None


def test_a_file_system_without_file_handles_falls_back_to_the_inode() -> None:
    """procfs has no file handles: both ways give its device and inode number, equal."""
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        identity = fileid.of_fd(fd)
        st = os.fstat(fd)
        assert identity == fileid.of_path("/proc/self/status")
        assert not fileid.unique(identity)
        assert struct.pack("Q", st.st_ino) in identity
    finally:
        os.close(fd)
