"""User and group lookups shared by every kind (host/posix.py)."""

from __future__ import annotations

import grp
import pwd

import pytest

from convergent.errors import ParamError
from convergent.host import posix
from convergent.resources.file import File


@pytest.mark.parametrize("value", ["4294967295", "4294967296", "99999999999999999999"])
def test_an_out_of_range_id_is_rejected_at_load(value: str) -> None:
    with pytest.raises(ParamError, match="out of range: a numeric id is 0 to 4294967294") as info:
        posix.parse_id("group", value)
    assert info.value.field == "group"


def test_a_file_with_group_4294967295_is_rejected_at_load() -> None:
    with pytest.raises(ParamError) as info:
        File("/tmp/convergent-never-written", group="4294967295")
    assert info.value.field == "group"


@pytest.mark.parametrize("value", ["", "ro\0ot", "evil\nname", "\x1b[31mred"])
def test_an_empty_or_control_character_id_is_rejected(value: str) -> None:
    with pytest.raises(ParamError) as info:
        posix.parse_id("owner", value)
    assert info.value.field == "owner"


def test_the_largest_valid_id_and_a_name_pass_the_load_check() -> None:
    assert posix.parse_id("owner", "4294967294") == posix.MAX_ID
    assert posix.parse_id("owner", "0") == 0
    assert posix.parse_id("owner", "root") is None  # a name is resolved on the host later


def test_names_and_numbers_resolve_both_ways() -> None:
    nobody = pwd.getpwuid(65534)
    group = grp.getgrgid(65534)
    assert posix.lookup_uid(nobody.pw_name) == 65534
    assert posix.lookup_uid("65534") == 65534
    assert posix.lookup_gid(group.gr_name) == 65534
    assert posix.user_name(65534) == nobody.pw_name
    assert posix.group_name(65534) == group.gr_name
    assert posix.user_name(4294967000) == "4294967000"


@pytest.mark.parametrize(
    ("lookup", "what"), [(posix.lookup_uid, "user"), (posix.lookup_gid, "group")]
)
def test_an_unknown_name_says_how_to_fix_it(lookup: object, what: str) -> None:
    with pytest.raises(posix.NoSuchName) as info:
        lookup("no-such-name-here")  # type: ignore[operator]
    assert str(info.value) == (
        f"there is no {what} 'no-such-name-here' on this host; create the {what} first "
        f"(and require it) or give a numeric {'uid' if what == 'user' else 'gid'}"
    )
