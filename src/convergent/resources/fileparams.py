"""The parameters of ``file`` (:class:`FileParams`) and the checks made on them when a
policy is loaded: which parameter goes with which state, link targets, ``validate``.

No ``from __future__ import annotations`` here: FileParams's annotations are types when
the class is made, which msgspec reads as they are; as strings it compiles each one at
the first ``file`` of a run (1.2 M instructions, a fifth of loading a 10-file policy)."""

import os
from typing import Literal

from convergent.errors import ParamError
from convergent.resources.base import Params
from convergent.resources.filechange import absolute

__all__ = [
    "FileParams",
    "check_states",
    "missing_dirs",
    "missing_text",
    "parse_target",
    "parse_validate",
]

_ONLY = {
    "content": ("exists",),
    "source": ("exists", "directory"),
    "target": ("link", "hard"),
    "mode": ("exists", "directory"),
    "owner": ("exists", "directory", "link"),
    "group": ("exists", "directory", "link"),
    "follow": ("exists", "directory"),
    "recurse": ("directory",),
    "purge": ("directory",),
    "replace": ("exists",),
    "backup": ("exists",),
    "validate": ("exists",),
    "parents": ("exists", "directory", "link", "hard"),
}
_DEFAULTS = {"replace": True}
_STATES = ("exists", "absent", "directory", "link", "hard")
# state -> the parameters that have no meaning with it, each with its unset value(s)
_FOREIGN = {
    state: tuple(
        (name, (_DEFAULTS[name],) if name in _DEFAULTS else (None, False))
        for name, states in _ONLY.items()
        if state not in states
    )
    for state in _STATES
}


class FileParams(Params, frozen=True):
    """A regular file, a directory or tree, a symlink, a hard link, or nothing at a path.

    path: absolute path of the file or directory (default: the resource name)
    content: the file's content, written as UTF-8 (exclusive with source)
    source: absolute path of a local file whose bytes are copied (exclusive with content);
        with state: directory, a directory whose tree is copied (content, modes and
        symlinks; with recurse, mode applies instead of the source's modes)
    state: exists (a regular file), absent, directory, link (a symlink to target) or hard
        (a hard link to target)
    target: what a link points to: for link, written as given (relative or absolute); for
        hard, an absolute path to a regular file on the same file system (when the target
        is replaced by a new file, the old link is a file: force: true links it again)
    mode: octal like "0644", or symbolic like "u=rw,g=r,o=", "a+x", "go-w" (as chmod)
    owner: user name or numeric uid, 0-4294967294 (default: left as it is; new files: the
        agent's)
    group: group name or numeric gid 0-4294967294 (default: left as it is)
    force: replace a dir or fifo/socket/device (or, with no content, a symlink) by a file,
        a file by a link, anything by a dir; remove non-empty dirs (as Ansible file's force;
        Ansible copy's force: no is replace: false here)
    parents: create missing parent directories, each named in the change (default false:
        a missing parent is an error, as in Puppet and Ansible)
    follow: true: a symlink at the path is followed (CHASE_SAFE) and content, mode and owner
        apply to what it leads to; false (default): the link itself is replaced
    recurse: with state: directory, owner, group and mode apply to everything below (a
        directory gets x where r is given, as chmod X); symlinks below are never followed
    purge: with a source directory, remove what is below the path and not in the source,
        unless another resource of the run manages it
    replace: false: create the file with this content if missing, never change the content
        of an existing one (Puppet's replace => false, Ansible copy's force: no)
    backup: before content is replaced, keep the previous file next to it as PATH.~N~ (N
        one more than the highest there)
    validate: a command run on the new content before it replaces the file, %s standing
        for the temp file ("visudo -cf %s"); a failure leaves the file as it was
    """

    path: str | None = None
    content: str | None = None
    source: str | None = None
    state: Literal["exists", "absent", "directory", "link", "hard"] = "exists"
    target: str | None = None
    mode: str | None = None
    owner: str | None = None
    group: str | None = None
    force: bool = False
    parents: bool = False
    follow: bool = False
    recurse: bool = False
    purge: bool = False
    replace: bool = True
    backup: bool = False
    validate: str | None = None


def check_states(p: FileParams) -> None:
    """A parameter given with a state it has no meaning for is an error naming both."""
    for name, unset in _FOREIGN[p.state]:
        if getattr(p, name) not in unset:
            states = _ONLY[name]
            raise ParamError(
                name, f"has no meaning with state: {p.state} (only with {', '.join(states)})"
            )


def parse_target(p: FileParams, path: str) -> str | None:
    """The link target of state: link (as given) or hard (absolute, normalised)."""
    if p.state not in ("link", "hard"):
        return None
    if not p.target:
        raise ParamError("target", f"state: {p.state} needs target: the path it points to")
    if p.state == "link":
        if "\0" in p.target:
            raise ParamError("target", "must not contain a NUL character")
        return p.target  # written as given
    if not p.target.startswith("/"):
        raise ParamError(
            "target",
            f"a hard link needs an absolute target, got {p.target!r}; write the full "
            "path (starting with /), or use state: link for a relative symlink",
        )
    target = absolute("target", p.target)
    if target == path:
        raise ParamError("target", f"target is the path itself ({target})")
    return target


def missing_dirs(missing: str, path: str) -> tuple[str, ...]:
    """The directories to create, from the first missing one down to ``path``'s parent."""
    parent = os.path.dirname(path)
    if not parent.startswith(missing.rstrip("/") + "/") and parent != missing:
        return (missing,)
    dirs = [missing]
    for part in parent[len(missing) :].strip("/").split("/"):
        if part:
            dirs.append(f"{dirs[-1]}/{part}")
    return tuple(dirs)


def missing_text(path: str, missing: str) -> str:
    """The error of a write refused for a missing parent directory."""
    return (
        f"cannot create {path}: the directory {missing} does not exist; manage it with a "
        "file resource (state: directory) or set parents: true"
    )


def parse_validate(command: str) -> tuple[str, ...]:
    """The ``validate`` command as argv; it must name the file as %s."""
    import shlex

    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ParamError("validate", f"cannot split the command: {exc}") from None
    if not argv or not any("%s" in arg for arg in argv):
        raise ParamError(
            "validate",
            f'must name the file to check as %s, like "visudo -cf %s"; got {command!r}',
        )
    return argv
