"""Whose bytes a file may hold, and what may be given to them in place.

A root agent that chowns or chmods a file another local user may have written (hers,
or writable by its group or others) hands her bytes the new rights, and with them any
descriptor or shared map she opened before: writes through a shared map keep a setuid
bit, and a swap of the name between a check and its apply changes which bytes they
are. These functions say when a change may be made in place (:func:`new_inode_needed`,
:func:`special_refused`) and which of an old file's bits a new one keeps
(:func:`kept_mode`); the kinds act on them (docs/architecture.md, "file").
"""

from __future__ import annotations

import os
import stat

__all__ = [
    "SPECIAL_BITS",
    "grants",
    "kept_mode",
    "new_inode_needed",
    "not_special",
    "special_refused",
    "untrusted",
]

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID


def untrusted(st: os.stat_result) -> str | None:
    """Why someone else may have written the regular file ``st`` describes (another
    user owns it, or its group or others may write it), None when only this process's
    user can have: its content is then as trusted as the agent."""
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}"
    if st.st_mode & 0o022:
        return "its group or others may write it"
    return None


def grants(st: os.stat_result, mode: int | None, uid: int = -1, gid: int = -1) -> bool:
    """Whether setting ``mode``/``uid``/``gid`` (None / -1: kept) on the file ``st``
    describes gives its content rights it does not have: another owner or group, or a
    setuid or setgid bit. Done in place to a file someone else may have written
    (:func:`untrusted`), that hands that user's bytes (and an open descriptor she may
    still write through) to the new owner: a root-owned setuid program of hers."""
    if (uid != -1 and uid != st.st_uid) or (gid != -1 and gid != st.st_gid):
        return True
    return mode is not None and bool(mode & SPECIAL_BITS & ~st.st_mode)


def kept_mode(st: os.stat_result, uid: int, gid: int) -> int:
    """The mode of the file ``st`` describes, carried to a new file of owner ``uid`` and
    group ``gid``: without setuid and setgid when the owner or group changes and
    someone else may have set them (as chown(2) clears them)."""
    mode = stat.S_IMODE(st.st_mode)
    if (uid != st.st_uid or gid != st.st_gid) and untrusted(st) is not None:
        mode &= ~SPECIAL_BITS
    return mode


def new_inode_needed(st: os.stat_result, mode: int | None, uid: int, gid: int) -> str | None:
    """Why setting ``mode``/``uid``/``gid`` (None / -1: kept) on the regular file ``st``
    describes must make a new file instead (None: in place is safe): someone else may
    have written it (:func:`untrusted`) and the change :func:`grants` it rights, or makes
    it look as trusted as the agent's own (root's, written by no one else): her open
    descriptors and shared maps would keep writing the inode, setuid bits and all."""
    why = untrusted(st)
    if why is None or not stat.S_ISREG(st.st_mode):
        return None
    if grants(st, mode, uid, gid):
        return why
    new_uid = st.st_uid if uid == -1 else uid
    new_mode = stat.S_IMODE(st.st_mode) if mode is None else mode
    return why if new_uid == os.geteuid() and not new_mode & 0o022 else None


def special_refused(
    st: os.stat_result, mode: int | None, uid: int, gid: int, *, content: bool
) -> str | None:
    """Why the regular file ``st`` describes may not become setuid or setgid (None: it
    may): another user's bytes would be (``content`` False: no content of the resource
    replaces them), or the file would stay hers (no ``uid`` given) and setgid for a group
    or a bit it did not have: she could change its bytes afterwards (setuid, it is only
    ever hers)."""
    why = untrusted(st)
    if why is None or not stat.S_ISREG(st.st_mode):
        return None
    new_uid = st.st_uid if uid == -1 else uid
    new_gid = st.st_gid if gid == -1 else gid
    final = kept_mode(st, new_uid, new_gid) if mode is None else mode
    if not final & SPECIAL_BITS:
        return None
    if final & 0o022:  # her write bits, carried by a symbolic mode or kept
        return f"it would be setuid or setgid and writable by others ({why})"
    if not content and grants(st, mode, uid, gid):
        return f"its bytes may be anyone's ({why})"
    added = new_gid != st.st_gid or not st.st_mode & stat.S_ISGID
    if new_uid == st.st_uid != os.geteuid() and final & stat.S_ISGID and added:
        return f"it would stay uid {st.st_uid}'s, who could change its bytes afterwards"
    return None


def not_special(path: str, why: str, fix: str) -> str:
    """The message of a :func:`special_refused` refusal for the file at ``path``."""
    return f"{path}: convergent does not make it setuid or setgid: {why}; {fix}"
