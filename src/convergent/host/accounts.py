"""Local users and groups: read from the account files, changed through the shadow tools.

::

    users = accounts.read_users()            # {"alice": User(...)}, /etc/passwd parsed
    groups = accounts.read_groups()          # {"staff": Group(...)}, /etc/group parsed
    accounts.read_hash("alice")              # the /etc/shadow field (root only)
    await accounts.run_tool(["useradd", "-m", "alice"], lock)

The files are parsed directly, never through NSS (``pwd``/``grp``): what a ``user`` or
``group`` resource manages is the local account, so an account that exists only in LDAP
or sssd neither hides a missing local one nor is ever changed. NIS compat lines (``+``,
``-``) are skipped. The files are read through :mod:`convergent.host.fs` (a regular
file, opened without following the final name).

Changes go through the shadow tools (useradd, usermod, userdel, groupadd, groupmod,
groupdel, chpasswd) run by :func:`convergent.host.process.run`, one at a time per run
(``lock``); they take the files' own lock, and a tool that finds it held by another
program is tried again a few times before its error is reported. A password hash is
given to ``chpasswd -e`` on its stdin, never as an argument (arguments are visible to
every user in /proc). A tool is let finish (``process.run(finish=True)``): a killed agent
does not kill it between two of the files it writes, and a shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "GROUP",
    "PASSWD",
    "SHADOW",
    "Group",
    "ToolError",
    "User",
    "default_home",
    "home_refused",
    "read_groups",
    "read_hash",
    "read_users",
    "run_tool",
    "tool_lock",
    "valid_name",
]

PASSWD = "/etc/passwd"
GROUP = "/etc/group"
SHADOW = "/etc/shadow"
GSHADOW = "/etc/gshadow"
NAME_MAX = 32  # useradd's limit on Linux
_LOCK_TRIES = 6  # a tool that finds the files locked by another program is tried again
_LOCK_DELAY = 0.1  # seconds before the first retry; doubled after each
_TOOL_LIMIT = 120.0  # seconds a shadow tool may run (copying /etc/skel, chowning a home)
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class User(NamedTuple):
    """One line of /etc/passwd."""

    name: str
    uid: int
    gid: int
    comment: str
    home: str
    shell: str


class Group(NamedTuple):
    """One line of /etc/group (``members``: the users listed in it, supplementary)."""

    name: str
    gid: int
    members: tuple[str, ...]


class ToolError(Exception):
    """A shadow tool failed; the message is its own (the last lines of its stderr)."""


def tool_lock() -> asyncio.Lock:
    """The lock that runs the shadow tools of one engine run one at a time (a
    ``ctx.shared`` factory: ``ctx.shared(accounts.tool_lock)``)."""
    return asyncio.Lock()


def valid_name(name: str) -> str | None:
    """Why ``name`` cannot be a user or group name (None: it can).

    Stricter than useradd where it matters for the files: ASCII only, no ``:``, ``,``,
    ``/``, whitespace or control characters, not starting with ``-`` (it would be an
    option), ``+`` or ``#`` (the files' NIS lines and comments, which every reader
    skips: the account would never be seen again), not only digits (it would be taken
    for an id), at most 32 characters.
    """
    if not name:
        return "an account name cannot be empty"
    if len(name) > NAME_MAX:
        return f"an account name has at most {NAME_MAX} characters, not {len(name)}"
    if name[0] in "-+#":
        return (
            f"an account name cannot start with {name[0]!r} (an option, or a line the "
            "account files skip)"
        )
    if not name.isascii():
        return "an account name is ASCII only (letters, digits, '.', '_', '-'), as useradd's"
    if name.isdigit():
        return "an account name cannot be only digits (it would be read as an id)"
    if name in (".", ".."):
        return f"{name!r} cannot be an account name"
    bad = sorted({c for c in name if c in ":,/\\" or c.isspace() or not c.isprintable()})
    if bad:
        return f"an account name cannot contain {''.join(bad)!r}"
    return None


def _read(path: str) -> str:
    from convergent.host import fs

    with fs.locate(path) as at:
        data, _ = fs.read_regular(at)
    return data.decode("utf-8", "surrogateescape")


def _fields(text: str, count: int) -> list[list[str]]:
    rows = []
    for line in text.split("\n"):
        if not line or line[0] in "+-#":
            continue
        parts = line.split(":")
        if len(parts) >= count:
            rows.append(parts)
    return rows


def read_users(path: str = PASSWD) -> dict[str, User]:
    """Every user of ``path`` (/etc/passwd) by name; a malformed line is skipped."""
    found: dict[str, User] = {}
    for p in _fields(_read(path), 7):
        if p[2].isdigit() and p[3].isdigit() and p[0] not in found:
            found[p[0]] = User(p[0], int(p[2]), int(p[3]), p[4], p[5], p[6])
    return found


def read_groups(path: str = GROUP) -> dict[str, Group]:
    """Every group of ``path`` (/etc/group) by name; a malformed line is skipped."""
    found: dict[str, Group] = {}
    for p in _fields(_read(path), 4):
        if p[2].isdigit() and p[0] not in found:
            members = tuple(m for m in p[3].split(",") if m)
            found[p[0]] = Group(p[0], int(p[2]), members)
    return found


def read_hash(name: str, path: str = SHADOW) -> str | None:
    """The password field of ``name`` in ``path`` (/etc/shadow; None: no such line).

    Raises PermissionError (with the fix) when the agent cannot read it.
    """
    try:
        text = _read(path)
    except PermissionError:
        raise PermissionError(
            f"cannot read {path}: reading password hashes needs root (run the agent as root)"
        ) from None
    for p in _fields(text, 2):
        if p[0] == name:
            return p[1]
    return None


def _tool(name: str) -> str:
    for directory in _SBIN:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return name


def default_home(name: str, defaults: str = "/etc/default/useradd") -> str:
    """The home useradd gives ``name`` when none is given: ``HOME`` of its defaults file
    (``useradd -D``), /home when it sets none, then the name."""
    base = "/home"
    try:
        with open(defaults, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, sep, value = line.strip().partition("=")
                if sep and key == "HOME" and value.strip().startswith("/"):
                    base = value.strip()
    except OSError:
        pass
    return f"{base.rstrip('/')}/{name}"


def home_refused(home: str, uid: int | None) -> str | None:
    """Why useradd may not make ``home`` (``-m``) for a new user of ``uid`` (None: not
    known yet), None when it may.

    useradd makes the directory, gives it to the user and copies /etc/skel into it, by
    name, following symlinks. So every directory on its way (as written, and as it
    resolves) must be root's and writable by no one else: a user who may write one of
    them could put a symlink or a directory of hers where the home is made (root then
    chowns whatever it leads to, or the new user gets her files). A home that exists
    already must be root's or the new user's: useradd leaves it as it is, and what is in
    it, to the new user.
    """
    import stat

    for path in (os.path.normpath(home), os.path.realpath(home)):
        parts = [part for part in path.split("/") if part]
        where = ""
        shared = ""  # the directory before, when others may add names to it (sticky)
        for i, part in enumerate(parts):
            parent, where = where or "/", where + "/" + part
            try:
                st = os.lstat(where)
            except FileNotFoundError:
                if shared:
                    return (
                        f"{where} does not exist and others may make it in {parent} first; "
                        + _HOME_FIX
                    )
                break  # made below directories only root may change
            last = i == len(parts) - 1
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid != 0 or last:
                    return f"{where} is a symlink (of uid {st.st_uid}): useradd would follow it"
                shared = ""
                continue  # root's own symlink: the resolved path is checked too
            if last:
                if not stat.S_ISDIR(st.st_mode):
                    return f"{where} exists and is not a directory"
                if st.st_uid not in (0, uid):
                    return (
                        f"{where} exists and belongs to uid {st.st_uid}: useradd would leave "
                        "it, and what is in it, to the new user; remove it, or give it to root"
                    )
                if st.st_mode & 0o022:
                    return (
                        f"{where} exists and others may write it: useradd would leave it, "
                        "and what they put in it, to the new user; choose another home"
                    )
                break
            if st.st_uid != 0:
                return f"{where} is uid {st.st_uid}'s: " + _HOME_FIX
            shared = ""
            if st.st_mode & 0o022:
                if not st.st_mode & stat.S_ISVTX:
                    return f"{where} is writable by others: " + _HOME_FIX
                shared = where  # others may add a name here, not replace root's
    return None


_HOME_FIX = (
    "a user could put a symlink or a directory of hers where the home is made; choose a "
    "home under directories only root may write (like /home), or set create_home: false "
    "and make it with a file resource (state: directory, owner: the user)"
)


async def run_tool(argv: Sequence[str], lock: asyncio.Lock, stdin: bytes | None = None) -> None:
    """Run the shadow tool ``argv`` (found in /usr/sbin, /sbin...) under ``lock``.

    Raises ToolError with the tool's own message when it fails (or, without root, before
    running it); one that reports the account files locked by another program is tried
    again (a bounded number of times).
    """
    if os.geteuid() != 0:
        raise ToolError(
            f"{argv[0]}: changing local accounts needs root, and the agent runs as uid "
            f"{os.geteuid()} (run it as root, or only check, under noop)"
        )
    from convergent.host import process

    program = _tool(argv[0])
    delay = _LOCK_DELAY
    for attempt in range(_LOCK_TRIES):
        async with lock:
            try:
                done = await process.run(
                    [program, *argv[1:]],
                    time_limit=_TOOL_LIMIT,
                    stdin=stdin,
                    output=True,
                    finish=True,
                )
            except FileNotFoundError:
                raise ToolError(
                    f"{argv[0]} not found: install the shadow tools (Debian: passwd)"
                ) from None
            except TimeoutError:
                raise ToolError(f"{argv[0]} did not finish within {_TOOL_LIMIT:g} s") from None
        if done.code == 0:
            return
        tail = done.stderr.tail() or done.stdout.tail()
        message = "\n".join(tail) or "(nothing on stderr)"
        if "cannot lock" in message and attempt + 1 < _LOCK_TRIES:
            await asyncio.sleep(delay)  # another program holds the files' lock
            delay *= 2
            continue
        raise ToolError(f"{argv[0]} exited with code {done.code}: {message}")
