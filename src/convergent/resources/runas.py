"""Who a command runs as: the ``user`` and ``group`` parameters of the kinds that run
commands (``exec``; ``process`` and ``svc`` may use it too), resolved when the command
starts, and the autoedges they imply.

::

    env, who = runas.credentials(ctx.id, "", "www-data", None, {"A": "1"})
    await process.run(argv, env=env, user=who.user, group=who.group, groups=who.groups)

A user is looked up through NSS (``pwd``), as ``su`` does, when the command starts (a user
created earlier in the same run is found): its uid, its primary group (unless ``group`` is
given) and its supplementary groups (``os.getgrouplist``); ``HOME``, ``USER`` and
``LOGNAME`` become the user's unless ``env`` sets them. ``group`` alone keeps the uid and
sets the group as the only one. Switching needs root: an agent running as another uid
gets a CommandError before anything runs, unless it already is that user and group.
"""

import errno
import os
from typing import NamedTuple

from convergent.errors import CommandError

__all__ = ["RunAs", "credentials", "cwd_error", "needs", "root_cwd"]


# No ``from __future__ import annotations`` in this module: RunAs's annotations are types,
# which typing takes as they are (strings it compiles, ~1 ms for a run's first compile()).
class RunAs(NamedTuple):
    """The ids for ``host.process.run`` (None: the agent's own)."""

    user: int | None = None
    group: int | None = None
    groups: list[int] | None = None


def needs(user: str | int | None, group: str | int | None) -> list[str]:
    """The autoedge uids of the user and group a command runs as (``user:NAME``,
    ``uid:N``, ``group:NAME``, ``gid:N``): a managed user or group comes first."""
    found = []
    for value, name_ns, id_ns in ((user, "user", "uid"), (group, "group", "gid")):
        if value is not None:
            text = str(value)
            found.append(f"{id_ns}:{text}" if text.isdigit() else f"{name_ns}:{text}")
    return found


def credentials(
    resource_id: str,
    prefix: str,
    user: str | int | None,
    group: str | int | None,
    env: dict[str, str] | None,
) -> tuple[dict[str, str] | None, RunAs]:
    """The environment additions and ids to run a command with; raises CommandError (its
    message starting with ``prefix``) for an unknown user or group, or a switch the agent
    cannot make."""
    if user is None and group is None:
        return env, RunAs()
    import grp
    import pwd

    def fail(message: str) -> CommandError:
        return CommandError(resource_id, prefix + message, None)

    uid = gid = None
    groups: list[int] | None = None
    extra: dict[str, str] = {}
    if user is not None:
        text = str(user)
        try:
            entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
        except KeyError:
            entry = None
        if entry is None:
            if not text.isdigit():
                raise fail(
                    f"user: there is no user {text!r} on this host; create it first (a "
                    "`user` resource for it is ordered first automatically) or give a uid"
                )
            if group is None:
                raise fail(f"user: uid {text} has no entry in the user database; give group: too")
            uid, groups = int(text), []
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
            extra = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    if group is not None:
        text = str(group)
        try:
            gid = int(text) if text.isdigit() else grp.getgrnam(text).gr_gid
        except KeyError:
            raise fail(
                f"group: there is no group {text!r} on this host; create it first (a "
                "`group` resource for it is ordered first automatically) or give a gid"
            ) from None
        if user is None:
            groups = [gid]
    if os.geteuid() != 0:
        if (uid is None or uid == os.geteuid()) and (gid is None or gid == os.getegid()):
            return env, RunAs()  # already who it asks for: nothing to switch
        who = " and ".join(
            f"{name} {value}" for name, value in (("user", user), ("group", group)) if value
        )
        raise fail(
            f"running as {who} needs root, and the agent runs as uid {os.geteuid()}: "
            "run the agent as root, or remove user:/group:"
        )
    return {**extra, **(env or {})}, RunAs(uid, gid, groups)


def root_cwd(rid: str, prefix: str, cwd: str) -> int:
    """A descriptor of the working directory of a command run as root (the agent's
    own), every step to it (the last one too) checked as every path the agent changes:
    a symlink of one user never leads it into what another user owns (CHASE_SAFE). The
    command enters this descriptor, not the name: a path swapped after this check does
    not move it. (A command run as a user enters the name as that user instead.)"""
    from convergent.host import fs

    try:
        return fs.open_directory(cwd)
    except fs.PathRefused as exc:
        raise CommandError(rid, f"{prefix}cwd: {exc.message}", None) from None
    except FileNotFoundError as exc:
        missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cwd)
        where = "" if _same(exc.filename, cwd) else f" ({exc.filename} is missing)"
        raise CommandError(rid, prefix + cwd_error(missing, cwd, False) + where, None) from None
    except NotADirectoryError as exc:
        what = "" if _same(exc.filename, cwd) else f" ({exc.filename} is not one)"
        raise CommandError(rid, f"{prefix}cwd {cwd} is not a directory{what}", None) from None
    except OSError as exc:
        raise CommandError(rid, f"{prefix}cwd {cwd}: {exc.strerror or exc}", None) from None


def _same(found: str | None, cwd: str) -> bool:
    return found is None or os.path.normpath(found) == os.path.normpath(cwd)


def cwd_error(exc: OSError, cwd: str, switched: bool) -> str:
    """What a start that could not enter ``cwd`` says (``switched``: as another user)."""
    if isinstance(exc, FileNotFoundError):
        return f"cwd {cwd} does not exist (create it first, or require the resource that does)"
    if isinstance(exc, NotADirectoryError):
        return f"cwd {cwd} is not a directory"
    if isinstance(exc, PermissionError):
        if switched:
            return f"cwd {cwd}: the command's user may not enter it (it runs there as them)"
        return f"cwd {cwd}: permission denied (the agent may not enter it)"
    return f"cwd {cwd}: {exc.strerror or exc}"
