"""Variables of a policy: ``vars:``, the command line's, and secrets.

Where a name is given more than once, the later of these wins (lowest first):

1. ``vars:`` of an included file (a later include over an earlier one);
2. ``vars:`` of the policy that includes it;
3. ``--vars-file FILE`` (a YAML mapping; a later file over an earlier one);
4. ``--set NAME=VALUE`` (VALUE read as YAML: ``8080`` is a number, ``[a, b]`` a list);
5. the ``secrets:`` file the policy names (a YAML mapping, mode 0600, owned by the user
   running convergent);
6. ``--set-secret NAME=VALUE`` (VALUE is text, as given).

A secret is a variable like the others in templates; its value is also hidden from
every report, log and diff (the engine is given the values and the parameters that hold
them: ``Graph.secrets``, ``Graph.held``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

__all__ = ["Inputs", "VarsError", "parse_assignment", "read_secrets_file", "read_vars_file"]

#: The largest vars or secrets file read (1 MiB).
MAX_VARS_BYTES = 1024 * 1024


class VarsError(Exception):
    """A vars or secrets file, or an assignment, is wrong; the message says how to fix it."""


class Inputs:
    """What the command line gives a policy besides its file.

    ``sets``: ``--set`` values; ``vars_files``: ``--vars-file`` paths; ``secret_sets``:
    ``--set-secret`` values; ``classes``: ``--class`` names; ``facts``: the facts of this
    host (None: gathered when the policy asks, :mod:`convergent.host.facts`);
    ``strict``: list unknown class names as problems (``check --strict``).
    """

    __slots__ = ("classes", "facts", "secret_sets", "sets", "strict", "vars_files")

    def __init__(
        self,
        *,
        sets: Mapping[str, Any] | None = None,
        vars_files: tuple[str, ...] = (),
        secret_sets: Mapping[str, str] | None = None,
        classes: tuple[str, ...] = (),
        facts: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        self.sets = dict(sets or {})
        self.vars_files = vars_files
        self.secret_sets = dict(secret_sets or {})
        self.classes = classes
        self.facts = facts
        self.strict = strict

    def __bool__(self) -> bool:
        return bool(self.sets or self.vars_files or self.secret_sets or self.classes)


def _valid_name(name: str) -> bool:
    return name.isidentifier() and name not in ("facts", "item", "key", "name", "classes")


def parse_assignment(text: str, option: str, *, as_yaml: bool = True) -> tuple[str, Any]:
    """``NAME=VALUE`` of ``--set`` (VALUE read as YAML) or ``--set-secret`` (text)."""
    name, eq, value = text.partition("=")
    if not eq or not _valid_name(name):
        shown = text if as_yaml else f"{name[:64]}=..."
        raise VarsError(
            f"{option} {shown!r}: write NAME=VALUE, NAME a word of letters, digits and _ "
            "(not facts, item, key, name or classes)"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # bytes the command line had that are not UTF-8
        raise VarsError(
            f"{option} {name}: the value is not valid UTF-8; give it as UTF-8 text"
        ) from None
    if not as_yaml:
        return name, value
    import yaml

    from convergent.policy.nodes import TooManyValues, load_value

    try:
        return name, load_value(value) if value.strip() else ""
    except TooManyValues as exc:
        raise VarsError(f"{option} {name}: {exc}") from None
    except yaml.YAMLError:
        return name, value


def _read(path: str, what: str) -> tuple[bytes, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise VarsError(f"{what} {path}: cannot open it: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VarsError(f"{what} {path}: not a regular file")
        data = f.read(MAX_VARS_BYTES + 1)
    if len(data) > MAX_VARS_BYTES:
        raise VarsError(f"{what} {path}: over {MAX_VARS_BYTES:,} bytes")
    return data, st


def _mapping(data: bytes, path: str, what: str) -> dict[str, Any]:
    import yaml

    from convergent.policy.nodes import load_value

    try:
        value = load_value(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise VarsError(f"{what} {path}: not YAML text: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise VarsError(f"{what} {path}: write a mapping of names to values, e.g. 'port: 80'")
    bad = [k for k in value if not _valid_name(k)]
    if bad:
        raise VarsError(f"{what} {path}: '{bad[0]}' is not a variable name")
    return value


def read_vars_file(path: str) -> dict[str, Any]:
    """The variables of a ``--vars-file``."""
    data, _ = _read(path, "--vars-file")
    return _mapping(data, path, "--vars-file")


def read_secrets_file(path: str) -> dict[str, str]:
    """The secrets of a ``secrets:`` file: refused unless it is a regular file of mode
    0600 (or stricter), owned by the user running convergent."""
    data, st = _read(path, "secrets file")
    if st.st_uid != os.geteuid():
        raise VarsError(
            f"secrets file {path}: owned by uid {st.st_uid}, not by the user running "
            f"convergent (uid {os.geteuid()}); chown it"
        )
    if st.st_mode & 0o077:
        raise VarsError(
            f"secrets file {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
            f"run 'chmod 600 {path}'"
        )
    found = _mapping(data, path, "secrets file")
    return {k: v if isinstance(v, str) else str(v) for k, v in found.items()}
