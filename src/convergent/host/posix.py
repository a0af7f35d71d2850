"""User and group lookups, the same for every kind that takes an owner, a group or a user.

::

    uid = parse_id("owner", "4294967295")   # ParamError at load: out of range
    uid = lookup_uid("www-data")             # NoSuchName when the host has no such user

A numeric id is accepted from 0 to :data:`MAX_ID` (4294967294): ``(uid_t) -1`` means
"leave unchanged" to chown(2), so a policy asking for it could never converge. A name is
resolved on the host when it is first needed (a user created earlier in the same run is
found), never at load. ``pwd`` and ``grp`` are imported on first use.
"""

from __future__ import annotations

from typing import Literal

from convergent.errors import ParamError

__all__ = [
    "MAX_ID",
    "NoSuchName",
    "group_name",
    "lookup_gid",
    "lookup_uid",
    "parse_id",
    "user_name",
]

MAX_ID = 4294967294  # (uid_t) -1 is chown's "leave unchanged"


class NoSuchName(LookupError):
    """A user or group name this host does not know; the message says how to fix it."""

    def __init__(self, what: Literal["user", "group"], name: str) -> None:
        self.what = what
        self.name = name
        number = "uid" if what == "user" else "gid"
        self.message = (
            f"there is no {what} {name!r} on this host; create the {what} first "
            f"(and require it) or give a numeric {number}"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def parse_id(field_name: str, value: str | None) -> int | None:
    """The numeric id in ``value``; None for a name (resolved later) or no value.

    Raises ParamError naming ``field_name`` for an empty value, a NUL or control
    character, or a number outside 0..4294967294.
    """
    if value is None:
        return None
    if not value:
        raise ParamError(field_name, "must be a name or a numeric id, not empty")
    if not value.isprintable():
        raise ParamError(field_name, f"must not contain control characters, got {value!r}")
    if value.isascii() and value.isdigit():
        number = int(value)
        if number > MAX_ID:
            raise ParamError(field_name, f"{value} is out of range: a numeric id is 0 to {MAX_ID}")
        return number
    return None


def lookup_uid(name: str) -> int:
    """The uid of user ``name`` (a numeric string is taken as it is)."""
    if name.isascii() and name.isdigit():
        return int(name)
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise NoSuchName("user", name) from None


def lookup_gid(name: str) -> int:
    """The gid of group ``name`` (a numeric string is taken as it is)."""
    if name.isascii() and name.isdigit():
        return int(name)
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise NoSuchName("group", name) from None


def user_name(uid: int) -> str:
    """The name of ``uid``, or the number when the host has no such user."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The name of ``gid``, or the number when the host has no such group."""
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
