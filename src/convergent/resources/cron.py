"""``cron``: a scheduled command, as a file of its own in ``/etc/cron.d``.

::

    - cron: backup
      minute: "30"
      hour: "2"
      weekday: mon-fri
      user: backup
      cmd: /usr/local/bin/backup --quiet
      env: {MAILTO: ops@example.org}

- The file is ``CRON_DIR/NAME`` (``cron_dir``, default ``/etc/cron.d``), named after the
  resource. cron (through run-parts rules) ignores a file in ``/etc/cron.d`` whose name
  holds anything but letters, digits, ``_`` and ``-``, so such a name is refused at load
  with a valid one suggested.
- The schedule is checked at load: each field is ``*``, a number, a range ``a-b``, any
  of these with a step (``*/15``, ``1-30/5``) or a comma list of them; month and weekday
  also take names (``jan``, ``mon``). A value out of range names the field and its range.
  ``special`` (``reboot``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``,
  ``annually``, ``midnight``) replaces the five fields.
- The file holds a header naming the resource, the ``env`` lines, and one entry; it is
  written atomically (:mod:`convergent.host.atomic`) with mode 0644 and owner root:root,
  which cron requires. A file changed, chmodded or removed by hand is put back (it is
  watched). ``state: absent`` removes it.
- ``%`` in ``cmd`` is cron's: an unescaped one ends the command and starts its standard
  input; write ``\\%`` for a literal percent sign (``date +\\%F``).
- The kind manages the file only: it does not need the cron daemon or its package (cron
  reads the directory when it is installed and running). A missing ``cron_dir`` is
  created as ``mkdir -p`` would, and the change says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.host import fs, trust
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.fswatch import FsWatcher
from convergent.resources.textfile import absolute, directory_missing, read, write

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["Cron", "CronChange", "CronParams", "parse_field"]

SPECIALS = ("reboot", "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly")
MODE = 0o644
# Character sets, not regular expressions: compiling those would cost start-up.
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NAME = _WORD | {"-"}  # what run-parts accepts in a cron.d file name
_USER = _WORD | {"-", "."}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# field: (lowest, highest, names of lowest.., what the range means)
_FIELDS: dict[str, tuple[int, int, tuple[str, ...], str]] = {
    "minute": (0, 59, (), "0-59"),
    "hour": (0, 23, (), "0-23"),
    "day": (1, 31, (), "1-31 (day of the month)"),
    "month": (1, 12, _MONTHS, "1-12 or jan-dec"),
    "weekday": (0, 7, _DAYS, "0-7 (0 and 7 are Sunday) or sun-sat"),
}


class CronParams(Params, frozen=True):
    """A scheduled command: a file in /etc/cron.d (cron_dir) named after the resource.

    cmd: the command line, run by /bin/sh (cron turns an unescaped percent sign into a newline
      that starts the command's input: put a backslash before a literal one)
    user: the user the command runs as (default root)
    minute: minute field, 0-59: *, a number, a range a-b, a step */n or a-b/n, or a comma list
    hour: hour field, 0-23, same syntax as minute
    day: day of the month, 1-31, same syntax as minute
    month: month field, 1-12 or jan-dec, same syntax as minute
    weekday: day of the week, 0-7 (0 and 7 are Sunday) or sun-sat, same syntax as minute
    special: reboot, hourly, daily, weekly, monthly, yearly, annually or midnight, instead
      of the five fields
    env: variables set for the command, written as NAME=value lines above the entry
    state: present (the file is there) or absent (the file is removed)
    cron_dir: absolute path of the directory holding the file (default /etc/cron.d)
    """

    cmd: str | None = None
    user: str = "root"
    minute: str | None = None
    hour: str | None = None
    day: str | None = None
    month: str | None = None
    weekday: str | None = None
    special: (
        Literal["reboot", "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"]
        | None
    ) = None
    env: dict[str, str] = {}
    state: Literal["present", "absent"] = "present"
    cron_dir: str = "/etc/cron.d"


class CronChange(Change):
    """What ``check`` found: ``action`` write (the whole file), meta (mode/owner) or remove."""

    def __init__(
        self, summary: str, diff: str | None, action: Literal["write", "meta", "remove"]
    ) -> None:
        super().__init__(summary, diff)
        self.action = action


class Cron(Resource[CronParams], kind="cron"):
    """See the module docstring; parameters are documented on :class:`CronParams`."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = "its file in cron_dir is removed"
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Cron | None:
        """Its file removed; None for ``state: absent``."""
        if self.params.state == "absent":
            return None
        return Cron(
            self.name, CronParams(state="absent", cron_dir=self.params.cron_dir), meta=self.meta
        )

    _path: str
    _content: bytes

    def validate(self) -> None:
        p = self.params
        if len(self.name) > 200:
            raise ParamError(
                None, "the name is the file's name: give one of 200 characters or fewer"
            )
        if not _NAME.issuperset(self.name):
            import re

            suggestion = re.sub(r"[^A-Za-z0-9_-]+", "-", self.name).strip("-") or "job"
            raise ParamError(
                None,
                f"cron ignores a file in cron.d whose name holds anything but letters, "
                f"digits, _ and - (the file is named after the resource): rename the "
                f"resource, e.g. to {suggestion!r}",
            )
        directory = absolute("cron_dir", p.cron_dir)
        self._path = f"{directory.rstrip('/')}/{self.name}"
        if p.state == "absent":
            return
        if p.cmd is None or not p.cmd.strip():
            raise ParamError("cmd", "state: present needs the command to run")
        if "\n" in p.cmd or "\r" in p.cmd:
            raise ParamError("cmd", "holds a line end; a cron entry is one line")
        user = p.user.removesuffix("$")  # a machine account's name ends with $
        if not user or user[0] in "-." or not _USER.issuperset(user):
            raise ParamError("user", f"{p.user!r} is not a user name (letters, digits, _ . - only)")
        fields = [getattr(p, name) for name in _FIELDS]
        if p.special is not None:
            for name, value in zip(_FIELDS, fields, strict=True):
                if value is not None:
                    raise ParamError(
                        name, f"special: {p.special} replaces the five fields; remove {name}"
                    )
            schedule = f"@{p.special}"
        else:
            schedule = " ".join(
                parse_field(name, "*" if value is None else value)
                for name, value in zip(_FIELDS, fields, strict=True)
            )
        lines = [f"# convergent: cron[{self.name}]; changes made here are put back\n"]
        for key, value in p.env.items():
            if not key or key[0].isdigit() or not _WORD.issuperset(key):
                raise ParamError(
                    f"env.{key}",
                    "a variable name is letters, digits and _, not starting with a digit",
                )
            if "\n" in value or "\r" in value:
                raise ParamError(f"env.{key}", "holds a line end; a value is one line")
            lines.append(f"{key}={value}\n")
        lines.append(f"{schedule} {p.user} {p.cmd}\n")
        self._content = "".join(lines).encode()

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the file with the run's shared inotify descriptor."""
        stop = ctx.shared(FsWatcher).watch(self._path, ctx.event)
        ctx.ready()
        return stop

    async def check(self, ctx: Context) -> CronChange | None:
        data, st = read(self.id, self._path)
        if self.params.state == "absent":
            return None if st is None else CronChange("removed", None, "remove")
        if data is None or st is None:
            diff = _diff(self._path, b"", self._content)
            if directory_missing(self._path):
                summary = f"created, with the directory {os.path.dirname(self._path)}"
                return CronChange(summary, diff, "write")
            return CronChange("created", diff, "write")
        if data != self._content:
            return CronChange("entry changed", _diff(self._path, data, self._content), "write")
        parts = []
        if stat.S_IMODE(st.st_mode) != MODE:
            parts.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {MODE:04o}")
        if (st.st_uid, st.st_gid) != (0, 0):
            parts.append(f"owner {st.st_uid}:{st.st_gid} -> 0:0")
        if not parts:
            return None
        why = trust.new_inode_needed(st, MODE, 0, 0)
        if why is not None:  # her descriptor would keep writing what root's cron reads
            return CronChange(f"{', '.join(parts)} (a new file: {why})", None, "write")
        return CronChange(", ".join(parts), None, "meta")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        action = change.action if isinstance(change, CronChange) else "write"
        try:
            if action == "remove":
                try:
                    with fs.locate(self._path) as at:
                        fs.remove(at, tree=False)
                except (FileNotFoundError, NotADirectoryError):
                    pass
            elif action == "meta":
                with fs.locate(self._path) as at:
                    fd, st = fs.open_node(at, directory=False, change=True)
                    try:
                        why = trust.new_inode_needed(st, MODE, 0, 0)
                        if why is not None:
                            raise ResourceError(
                                self.id,
                                f"{self._path} was replaced or made writable since its check "
                                f"({why}); nothing was changed: its next check writes a new "
                                "file",
                            )
                        fs.set_meta(fd, MODE, 0, 0)
                    finally:
                        os.close(fd)
            else:
                await write(ctx, self._path, self._content, MODE, 0, 0, parents=True)
        except fs.PathRefused as exc:
            raise ResourceError(self.id, exc.message) from None
        return None

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """Under noop: its file holds the entry (0644, root:root), or is gone (None
        ``change``: it may be either)."""
        from convergent.resources.predicted import Effects, Node

        if change is None:
            node = Node("unknown", self.id)
        elif self.params.state == "absent":
            node = Node("absent", self.id)
        elif isinstance(change, CronChange) and change.action == "meta":
            node = Node("file", self.id, None, True, MODE, 0, 0)  # its content kept
        else:
            node = Node("file", self.id, self._content, False, MODE, 0, 0)
        return Effects({self._path: node})

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[str]:
        """The file it writes, as ``file:<path>``."""
        return (f"file:{self._path}",)

    def needs(self) -> tuple[Sequence[str], ...]:
        """Its nearest managed directory (``/etc/cron.d`` managed by a ``file``), and the
        managed user its command runs as (``user:NAME``)."""
        return (path_uids("file:", self._path), (f"user:{self.params.user}",))


def parse_field(name: str, value: str) -> str:
    """``value`` checked as cron's field ``name``; returned as written. Raises
    ParamError naming the field, the bad part and the valid range."""
    low, high, names, allowed = _FIELDS[name]
    if not value or value != value.strip() or " " in value or "\t" in value:
        raise ParamError(name, f"{value!r}: one field without spaces, {allowed}")

    def number(text: str) -> int:
        word = text.lower()
        if word in names:
            return names.index(word) + low
        if not text.isdigit():
            raise ParamError(
                name,
                f"{value!r}: {text!r} is not a number; {name} takes {allowed}, ranges a-b, "
                "steps */n and comma lists",
            )
        n = int(text)
        if not low <= n <= high:
            raise ParamError(name, f"{value!r}: {n} is out of range; {name} takes {allowed}")
        return n

    for item in value.split(","):
        span, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise ParamError(name, f"{value!r}: the step {step!r} must be a number of 1 or more")
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        a = number(first)
        if dash:
            b = number(last)
            if b < a:
                raise ParamError(
                    name, f"{value!r}: the range {span} runs backwards; write {last}-{first}?"
                )
        elif slash:
            raise ParamError(
                name, f"{value!r}: a step follows * or a range: write {first}-{high}/{step}"
            )
    return value


def _diff(path: str, old: bytes, new: bytes) -> str:
    import difflib

    return "".join(
        difflib.unified_diff(
            old.decode(errors="replace").splitlines(keepends=True),
            new.decode(errors="replace").splitlines(keepends=True),
            "/dev/null" if not old else path,
            path,
        )
    )
