"""``user``: a local user account, kept as described; ``state: absent`` removes it.

::

    user:
      deploy:
        uid: 1500
        group: deploy            # primary group: a name or a gid
        groups: [www-data, adm]  # supplementary
        shell: /bin/bash
        password_hash: "$6$..."  # never shown in reports, diffs or logs

The resource's name is the account's name. State is read from /etc/passwd, /etc/group
and /etc/shadow parsed directly, never through NSS (an account only in LDAP or sssd is
not seen, and never changed); changes go through useradd, usermod, userdel and
``chpasswd -e`` (the hash on its stdin, never in an argument), one tool at a time per
run. A tool's failure is reported with its own message. The three files are watched
(they are replaced by rename): a user removed or changed by hand is put back at once by
a running agent.

What is managed is only what is given: a parameter left out is left as it is. ``system``,
``create_home`` and a default home or primary group matter only when the user is created.
A changed ``home`` is written to /etc/passwd; the directory is not moved. ``state:
absent`` runs ``userdel`` without ``-r``: the home directory and mail spool stay.

A home that useradd makes must lie below directories only root may write (a sticky one
such as /tmp only on the way to a directory of root's that exists), and one that exists
already must be root's or the user's uid's and written by no one else: otherwise another
local user could have useradd follow her symlink or hand her directory to the new user,
and the user is not created (the error says why). Without ``home``, useradd's own default
(``HOME=`` of /etc/default/useradd, then the name) is checked and given to it. A group
named in ``group`` or ``groups`` that does not exist fails the resource before any tool
runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.host import accounts
from convergent.host.posix import MAX_ID
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.predicted import Account, Effects, Node, View

__all__ = ["User", "UserParams", "group_uid"]


class UserParams(Params, frozen=True):
    """A local user account; the resource's name is the user's name.

    state: present or absent (absent: userdel; the home directory stays)
    uid: numeric uid, 0-4294967294 (default: the next free one at creation, then left alone);
      one user's only: a second user of the policy with it is refused at load
    group: primary group, a name or a gid (default at creation: a group named after the user)
    groups: supplementary groups, names or gids
    groups_exclusive: true: in exactly ``groups`` (taken out of others); false: at least in them
    home: absolute path of the home directory (default at creation: useradd's, /home/NAME)
    create_home: at creation, make the home from /etc/skel (default: true, not for system);
      only below directories no other user may write
    shell: absolute path of the login shell
    comment: the GECOS field (a full name), without ':' or newline
    system: create a system account (uid below UID_MIN); only at creation
    password_hash: crypt(3) hash for /etc/shadow ($6$..., $y$...), or ! or * to lock; never shown
    """

    state: Literal["present", "absent"] = "present"
    uid: int | None = None
    group: str | int | None = None
    groups: list[str | int] | None = None
    groups_exclusive: bool = False
    home: str | None = None
    create_home: bool | None = None
    shell: str | None = None
    comment: str | None = None
    system: bool = False
    password_hash: str | None = None


def group_uid(value: str | int) -> str:
    """The autoedge uid of a group given by name or gid (``group:staff``, ``gid:50``)."""
    text = str(value)
    return f"gid:{text}" if _numeric(text) else f"group:{text}"


def _numeric(text: str) -> bool:
    """An id, not a name: ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` fails)."""
    return text.isascii() and text.isdigit()


def _check_id(field: str, value: str | int | None) -> None:
    if value is None:
        return
    if isinstance(value, int) or _numeric(value):
        if not 0 <= int(value) <= MAX_ID:
            raise ParamError(field, f"{value} is out of range: an id is 0 to {MAX_ID}")
        return
    why = accounts.valid_name(value)
    if why is not None:
        raise ParamError(field, why)


def _check_hash(value: str) -> None:
    """A crypt(3) hash or a lock; the value itself is never put in the message."""
    why = None
    if not value:
        why = "is empty (an empty hash lets anyone log in without a password)"
    elif ":" in value or not value.isprintable() or " " in value:
        why = "cannot contain ':', spaces or control characters"
    elif value.lstrip("!") not in ("", "*") and not _crypt_form(value.lstrip("!")):
        why = "does not look like a crypt(3) hash (old DES hashes are refused)"
    if why is not None:
        raise ParamError(
            "password_hash",
            f"{why}; give a hash as made by `mkpasswd -m sha-512` or `openssl passwd -6` "
            "(like $6$salt$...), or ! or * to lock the account (the value is not shown)",
        )


def _crypt_form(value: str) -> bool:
    """``$id$salt$hash`` (``$id$param$salt$hash`` for ``$6$rounds=N``, yescrypt's ``$y$``):
    a ``$``, then at least three non-empty fields."""
    fields = value.split("$")
    return len(fields) >= 4 and fields[0] == "" and all(fields[1:])


class User(Resource[UserParams], kind="user"):
    """A local user account, created, changed or removed with the shadow tools."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = (
        "removed with userdel (the home directory stays), only when the entry says "
        "`destroy: remove`"
    )
    destroy_default: ClassVar[str] = "keep"

    def absent(self, explicit: bool) -> User | None:
        """Removed; None for ``state: absent``."""
        if self.params.state == "absent":
            return None
        return User(self.name, UserParams(state="absent"), meta=self.meta)

    def validate(self) -> None:
        p = self.params
        why = accounts.valid_name(self.name)
        if why is not None:
            raise ParamError(None, why)
        if p.state == "absent":
            for field in UserParams.__struct_fields__:
                if field != "state" and getattr(p, field) != getattr(_DEFAULTS, field):
                    raise ParamError(field, "has no meaning with state: absent; remove it")
            return
        _check_id("uid", p.uid)
        _check_id("group", p.group)
        for i, item in enumerate(p.groups or ()):
            _check_id(f"groups[{i}]", item)
        for field in ("home", "shell"):
            value = getattr(p, field)
            if value is not None and (not value.startswith("/") or ":" in value):
                raise ParamError(field, f"{value!r}: give an absolute path without ':'")
            if value is not None and not value.isprintable():
                raise ParamError(field, "cannot contain a newline or control characters")
            if value is not None and {".", ".."} & set(value.split("/")):
                raise ParamError(field, f"{value!r}: give the path without . or .. parts")
        if p.comment is not None and (":" in p.comment or not p.comment.isprintable()):
            raise ParamError("comment", "cannot contain ':', a newline or control characters")
        if p.password_hash is not None:
            _check_hash(p.password_hash)

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch /etc/passwd and /etc/group (and /etc/shadow for a password hash)."""
        from convergent.resources.fswatch import FsWatcher

        watcher = ctx.shared(FsWatcher)
        paths = [accounts.PASSWD, accounts.GROUP]
        if self.params.password_hash is not None:
            paths.append(accounts.SHADOW)
        stops = [watcher.watch(path, ctx.event) for path in paths]

        def unsubscribe() -> None:
            for stop in stops:
                stop()

        ctx.ready()
        return unsubscribe

    async def check(self, ctx: Context) -> Change | None:
        parts, _ = self._plan(ctx)
        return Change(", ".join(parts)) if parts else None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        parts, commands = self._plan(ctx, applying=True)
        lock = ctx.shared(accounts.tool_lock)
        for argv, stdin in commands:
            try:
                await accounts.run_tool(argv, lock, stdin)
            except accounts.ToolError as exc:
                raise ResourceError(ctx.id, str(exc)) from None
        return ", ".join(parts) if parts else None

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: the account it would leave (``user:NAME``: absent, or present with
        the uid the policy gives, or keeps; not known for a new one without ``uid``), the
        group named after it that useradd would make, and its new home directory."""
        p = self.params
        key = f"user:{self.name}"
        if p.state == "absent":
            return Effects(accounts={key: Account(False)})
        try:
            current = accounts.read_users().get(self.name)
            groups = accounts.read_groups()
        except OSError:
            return Effects(accounts={key: Account(True)})
        uid = p.uid if p.uid is not None else (current.uid if current is not None else None)
        effects = Effects(accounts={key: Account(True, uid)})
        if current is None and change is not None:
            if p.group is None and self.name not in groups:
                effects.accounts[f"group:{self.name}"] = Account(True)
            if p.create_home if p.create_home is not None else not p.system:
                home = self._home()
                if os.path.lexists(home):  # useradd leaves it as it is
                    return effects
                node = Node("directory", self.id, uid=uid) if p.home else Node("unknown", self.id)
                effects.paths[home] = node
        return effects

    # -- planning -----------------------------------------------------------------------

    def _plan(
        self, ctx: Context, applying: bool = False
    ) -> tuple[list[str], list[tuple[list[str], bytes | None]]]:
        """What differs (summary parts, never a hash) and the tool runs that fix it
        (``applying``: about to run them, so the groups they name must exist)."""
        p = self.params
        name = self.name
        try:
            users = accounts.read_users()
            current = users.get(name)
            if p.state == "absent":
                if current is None:
                    return [], []
                return ["removed"], [(["userdel", "--", name], None)]
            groups = accounts.read_groups()
            stored = None
            if p.password_hash is not None and current is not None:
                stored = accounts.read_hash(name)
        except OSError as exc:
            raise ResourceError(ctx.id, f"cannot read the account files: {_why(exc)}") from None
        if applying:  # under noop, a group made earlier in the run is not there yet
            missing = _missing_groups(groups, p.group, p.groups or ())
            if missing:
                raise ResourceError(
                    ctx.id,
                    f"{missing} does not exist: create it (a `group` resource comes first "
                    "by itself), or leave it out; nothing was changed",
                )
        feed = None
        if p.password_hash is not None and stored != p.password_hash:
            feed = f"{name}:{p.password_hash}\n".encode()
        if current is None:
            self._refuse_home(ctx)
            return self._create(groups, feed)
        parts: list[str] = []
        argv: list[str] = []
        if p.uid is not None and p.uid != current.uid:
            parts.append(f"uid {current.uid} -> {p.uid}")
            argv += ["-u", str(p.uid)]
        if p.group is not None:
            gid = _gid(groups, p.group)
            if gid != current.gid:
                parts.append(f"group {_group_name(groups, current.gid)} -> {p.group}")
                argv += ["-g", str(p.group)]
        for field, flag, have in (
            ("home", "-d", current.home),
            ("shell", "-s", current.shell),
            ("comment", "-c", current.comment),
        ):
            want = getattr(p, field)
            if want is not None and want != have:
                parts.append(f"{field} {have!r} -> {want!r}")
                argv += [flag, want]
        if p.groups is not None:
            argv += self._supplementary(groups, parts)
        commands: list[tuple[list[str], bytes | None]] = []
        if argv:
            commands.append((["usermod", *argv, "--", name], None))
        if feed is not None:
            parts.append("password hash changed")
            commands.append((["chpasswd", "-e"], feed))
        return parts, commands

    def _create(
        self, groups: dict[str, accounts.Group], feed: bytes | None
    ) -> tuple[list[str], list[tuple[list[str], bytes | None]]]:
        p = self.params
        argv = ["useradd"]
        if p.system:
            argv.append("-r")
        if p.uid is not None:
            argv += ["-u", str(p.uid)]
        if p.group is not None:
            argv += ["-g", str(p.group)]
        elif self.name in groups:  # join the group named after the user, as usual
            argv += ["-g", self.name]
        if p.groups:
            argv += ["-G", ",".join(str(g) for g in p.groups)]
        create_home = p.create_home if p.create_home is not None else not p.system
        if p.home is not None or create_home:
            argv += ["-d", self._home()]
        argv.append("-m" if create_home else "-M")
        if p.shell is not None:
            argv += ["-s", p.shell]
        if p.comment is not None:
            argv += ["-c", p.comment]
        argv += ["--", self.name]
        commands: list[tuple[list[str], bytes | None]] = [(argv, None)]
        summary = "created"
        if p.uid is not None:
            summary += f" (uid {p.uid})"
        if feed is not None:
            commands.append((["chpasswd", "-e"], feed))
            summary += " with a password hash"
        return [summary], commands

    def _home(self) -> str:
        """The home given, or the one useradd would choose (given to it as ``-d``: the
        home checked is the one made)."""
        p = self.params
        return p.home if p.home is not None else accounts.default_home(self.name)

    def _refuse_home(self, ctx: Context) -> None:
        """A new user's home is made only where no other user can redirect it."""
        p = self.params
        if not (p.create_home if p.create_home is not None else not p.system):
            return
        why = accounts.home_refused(self._home(), p.uid)
        if why is not None:
            raise ResourceError(ctx.id, f"home: {why}; nothing was changed")

    def _supplementary(self, groups: dict[str, accounts.Group], parts: list[str]) -> list[str]:
        """usermod's arguments for the supplementary groups (and the summary's words)."""
        p = self.params
        wanted = {_group_name(groups, g) for g in p.groups or ()}
        have = {g.name for g in groups.values() if self.name in g.members}
        missing = sorted(wanted - have)
        extra = sorted(have - wanted) if p.groups_exclusive else []
        if not missing and not extra:
            return []
        words = [f"+{g}" for g in missing] + [f"-{g}" for g in extra]
        parts.append("groups " + " ".join(words))
        if p.groups_exclusive:
            return ["-G", ",".join(sorted(wanted))]
        return ["-a", "-G", ",".join(missing)]

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str, ...]:
        """``user:NAME`` (and ``uid:N`` with a uid): files it owns, commands run as it."""
        if self.params.state == "absent":
            return ()
        uid = self.params.uid
        return (f"user:{self.name}",) + ((f"uid:{uid}",) if uid is not None else ())

    def needs(self) -> list[Sequence[str]]:
        """Its managed groups come first: the primary (or the one named after it, which
        useradd joins) and each supplementary group."""
        p = self.params
        if p.state == "absent":
            return []
        primary = p.group if p.group is not None else self.name
        return [(group_uid(primary),), *((group_uid(g),) for g in p.groups or ())]


_DEFAULTS = UserParams()


def _gid(groups: dict[str, accounts.Group], value: str | int) -> int | None:
    text = str(value)
    if _numeric(text):
        return int(text)
    found = groups.get(text)
    return found.gid if found is not None else None


def _group_name(groups: dict[str, accounts.Group], value: str | int) -> str:
    text = str(value)
    if not _numeric(text):
        return text
    for group in groups.values():
        if group.gid == int(text):
            return group.name
    return text


def _missing_groups(
    groups: dict[str, accounts.Group], primary: str | int | None, more: Sequence[str | int]
) -> str | None:
    """``group 'x'`` (or ``group 50``) when the primary or a supplementary group does not
    exist: useradd and usermod would fail on it after taking the account files' locks
    (and the agent's own watch of them would try again at once)."""
    gids = {group.gid for group in groups.values()}
    for value in (primary, *more) if primary is not None else more:
        text = str(value)
        if _numeric(text) and int(text) not in gids:
            return f"group {text}"
        if not _numeric(text) and text not in groups:
            return f"group {text!r}"
    return None


def _why(exc: OSError) -> str:
    if exc.filename is None and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
