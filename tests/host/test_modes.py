"""Symbolic modes computed by host/modes.py agree with chmod(1) on real files."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.host import modes

_who = st.text(alphabet="ugoa", max_size=3)
_perms = st.one_of(st.text(alphabet="rwxXst", max_size=4), st.sampled_from(["u", "g", "o"]))
_action = st.tuples(st.sampled_from("+-="), _perms).map("".join)
_clause = st.tuples(_who, st.lists(_action, min_size=1, max_size=2).map("".join)).map("".join)
_mode = st.lists(_clause, min_size=1, max_size=3).map(",".join)


@settings(max_examples=150, deadline=None)
@given(text=_mode, old=st.integers(0, 0o7777), directory=st.booleans())
def test_symbolic_modes_match_chmod_on_real_files(text: str, old: int, directory: bool) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    with tempfile.TemporaryDirectory() as top:
        path = os.path.join(top, "d" if directory else "f")
        if directory:
            os.mkdir(path)
        else:
            open(path, "w").close()
        os.chmod(path, old)
        old = stat.S_IMODE(os.stat(path).st_mode)  # what the kernel kept (no sgid on dirs...)
        subprocess.run(["chmod", "--", text, path], check=False, capture_output=True)
        expected = stat.S_IMODE(os.stat(path).st_mode)
        os.chmod(path, 0o700)
    assert modes.parse(text).apply(old, directory=directory, umask=umask) == expected


@pytest.mark.parametrize(
    ("text", "old", "directory", "new"),
    [
        ("u=rw,g=r,o=", 0o777, False, 0o640),
        ("a+x", 0o644, False, 0o755),
        ("go-w", 0o666, False, 0o644),
        ("u+rX", 0o600, True, 0o700),
        ("a+X", 0o644, False, 0o644),
        ("0750", 0o644, False, 0o750),
        ("g=u", 0o750, False, 0o770),
    ],
)
def test_common_modes_give_what_chmod_gives(text: str, old: int, directory: bool, new: int) -> None:
    assert modes.parse(text).apply(old, directory=directory) == new


@pytest.mark.parametrize("text", ["", "rw", "u=rwz", "u+,", "q+x", "0o644", "99", "12345", "+r g"])
def test_a_mode_that_does_not_parse_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="symbolic one like"):
        modes.parse(text)


def test_octal_modes_give_search_to_directories_where_read_is_given() -> None:
    assert modes.with_search(0o644) == 0o755
    assert modes.with_search(0o600) == 0o700
    assert modes.with_search(0o640) == 0o750
