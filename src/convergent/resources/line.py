"""``line``: one line in a text file, the rest of the file left byte for byte as it is.

::

    - line: sshd no root login
      path: /etc/ssh/sshd_config
      match: "^#?PermitRootLogin"
      text: PermitRootLogin no
      insert_after: "^#?Port "

Ansible's ``lineinfile`` and Puppet's ``file_line``:

- ``text`` is the line, ``insert_after``/``insert_before`` the anchors (Ansible's
  ``line``, ``insertafter``, ``insertbefore``; Puppet's ``line``, ``after``): in a policy
  the first key of an entry is its kind and ``before`` is an edge, so the parameters
  cannot take those names.
- ``state: present``: with ``match``, the last line matching it is replaced by ``text``;
  when none matches (or without ``match``) and no line is already equal to ``text``, it
  is inserted after the first line matching ``insert_after``, or before the first
  line matching ``insert_before``, or at the end (also when the anchor matches nothing).
- ``state: absent``: every line matching ``match`` (without it: every line equal to
  ``text``) is removed.
- Regular expressions are Python's (``re.search`` on each line without its line end);
  one that does not compile is refused when the policy is loaded. A line end (``\\n``
  or ``\\r\\n``) is kept as the file has it; a new line gets the file's first line end.
- The file is replaced atomically (:mod:`convergent.host.atomic`) keeping its owner and
  mode; a symlink, FIFO or directory at the path is refused, never followed. A missing
  file is an error unless ``create: true`` (then it is made holding the line; a missing
  directory is an error: it is never created). The file is watched: a line removed by
  hand is put back.
- Several ``line`` resources on one file never lose each other's edits: each holds the
  file's lock (one per file, shared by the run) from reading the file to renaming the new
  one over it, and computes its edit from what it read under the lock. A ``file``
  resource with ``content`` for the same path would fight them: manage such a file with
  one or the other.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from convergent.errors import ParamError, ResourceError
from convergent.graph.autoedge import path_uids
from convergent.host import fs
from convergent.resources.base import Change, Context, Params, Resource
from convergent.resources.fswatch import FsWatcher
from convergent.resources.textfile import PathLocks, absolute, directory_missing, read, write

if TYPE_CHECKING:
    from convergent.resources.predicted import Effects, View

__all__ = ["Line", "LineChange", "LineParams", "edit"]


class LineParams(Params, frozen=True):
    """A line in a text file (Ansible's lineinfile, Puppet's file_line).

    path: absolute path of the file (default: the resource name, when it is an absolute path)
    text: the whole line, without its line end; required with state: present
    match: regular expression searched in each line: with state: present the last matching
      line is replaced by text; with state: absent every matching line is removed
    state: present (the line is in the file) or absent (no line equal to text or matching match)
    insert_after: regular expression: a new line goes after the first line matching it (none
      matching: at the end)
    insert_before: regular expression: a new line goes before the first line matching it (none
      matching: at the end)
    create: make a missing file holding the line (default false: a missing file is an error)
    """

    path: str | None = None
    text: str | None = None
    match: str | None = None
    state: Literal["present", "absent"] = "present"
    insert_after: str | None = None
    insert_before: str | None = None
    create: bool = False


class LineChange(Change):
    """What ``check`` found: the whole new content (``data``); ``create``: no file yet."""

    def __init__(
        self, summary: str, diff: str | None, data: bytes, st: os.stat_result | None
    ) -> None:
        super().__init__(summary, diff)
        self.data = data
        self.create = st is None
        # A rewritten file keeps its mode and owner; a new one gets the defaults.
        self.mode = None if st is None else stat.S_IMODE(st.st_mode)
        self.uid = -1 if st is None else st.st_uid
        self.gid = -1 if st is None else st.st_gid


class Line(Resource[LineParams], kind="line"):
    """See the module docstring; parameters are documented on :class:`LineParams`."""

    #: What ``convergent destroy`` makes of it (the ``Destroyable`` ability).
    absent_state: ClassVar[str] = "the line (equal to text) is taken out of the file"
    destroy_default: ClassVar[str] = "remove"

    def absent(self, explicit: bool) -> Line | None:
        """The line equal to ``text`` removed (not the lines ``match`` would replace)."""
        if self.params.state == "absent" or self.params.text is None:
            return None
        return Line(
            self.name,
            LineParams(path=self._path, text=self.params.text, state="absent"),
            meta=self.meta,
        )

    _path: str
    _match: re.Pattern[str] | None
    _after: re.Pattern[str] | None
    _before: re.Pattern[str] | None

    def validate(self) -> None:
        p = self.params
        if p.path is None and not self.name.startswith("/"):
            raise ParamError(
                "path",
                f"give the file's path (the resource name {self.name!r} is not an absolute path)",
            )
        self._path = absolute("path", p.path if p.path is not None else self.name)
        if p.text is not None and ("\n" in p.text or "\r" in p.text):
            raise ParamError("text", "holds a line end; give one line (one resource per line)")
        if p.state == "present" and p.text is None:
            raise ParamError("text", "state: present needs the text of the line to put in")
        if p.state == "absent" and p.text is None and p.match is None:
            raise ParamError("match", "state: absent needs match (a regex) or the text to remove")
        if p.insert_after is not None and p.insert_before is not None:
            raise ParamError(
                "insert_before", "insert_after and insert_before are exclusive: give one of them"
            )
        if p.state == "absent":
            for name in ("insert_after", "insert_before", "create"):
                if getattr(p, name) not in (None, False):
                    raise ParamError(name, "has no meaning with state: absent; remove it")
        self._match = _regex("match", p.match)
        self._after = _regex("insert_after", p.insert_after)
        self._before = _regex("insert_before", p.insert_before)

    # -- the contract -----------------------------------------------------------------

    def subscribe(self, ctx: Context) -> Callable[[], None]:
        """Watch the file with the run's shared inotify descriptor."""
        stop = ctx.shared(FsWatcher).watch(self._path, ctx.event)
        ctx.ready()
        return stop

    async def check(self, ctx: Context) -> LineChange | None:
        return self.plan()

    async def apply(self, ctx: Context, change: Change) -> str | None:
        # Under the file's lock, the edit is made again from the file as it is now: an
        # edit another resource committed since this one's check is kept.
        async with ctx.shared(PathLocks).hold(self._path):
            now = self.plan(diff=False)
            if now is None:
                return None
            await write(ctx, self._path, now.data, now.mode, now.uid, now.gid, keep_acl=True)
            return now.summary

    # -- under noop (the Predicts ability) ---------------------------------------------

    async def check_predicted(self, ctx: Context, view: View) -> LineChange | None:
        """Its check on the content a resource upstream would leave in the file."""
        node = view.node(self._path)
        if node is None or node.keeps:
            return self.plan()
        return self.plan(predicted=(view.content(self._path), None))

    def predict(self, ctx: Context, change: Change | None, view: View) -> Effects:
        """The file holds the edited content (None ``change``: it may)."""
        from convergent.resources.predicted import Effects, Node

        if not isinstance(change, LineChange):
            return Effects({self._path: Node("unknown", self.id)})
        mode = change.mode if change.mode is not None else fs.default_mode()
        uid = None if change.uid == -1 else change.uid
        gid = None if change.gid == -1 else change.gid
        return Effects({self._path: Node("file", self.id, change.data, False, mode, uid, gid)})

    def plan(
        self,
        *,
        diff: bool = True,
        predicted: tuple[bytes | None, os.stat_result | None] | None = None,
    ) -> LineChange | None:
        """What the file needs (read only); None when it is right. ``diff``: describe it.
        ``predicted``: the content (and stat) to edit instead of the file's (noop)."""
        p = self.params
        data, st = read(self.id, self._path) if predicted is None else predicted
        if data is None:
            if p.state == "absent":
                return None
            if not p.create:
                raise ResourceError(
                    self.id,
                    f"{self._path} does not exist; set create: true to make it with the "
                    "line, or manage the file with `file`",
                )
            if directory_missing(self._path):
                raise ResourceError(
                    self.id,
                    f"the directory of {self._path} does not exist; create it first (a "
                    "`file` with state: directory comes first by itself)",
                )
            new = (p.text or "").encode(errors="surrogateescape") + b"\n"
            shown = _diff(self._path, b"", new) if diff else None
            return LineChange("created with the line", shown, new, None)
        edited = edit(p, self._match, self._after, self._before, data)
        if edited is None:
            return None
        shown = _diff(self._path, data, edited[0]) if diff else None
        return LineChange(edited[1], shown, edited[0], st)

    # -- automatic edges ----------------------------------------------------------------

    def provides(self) -> tuple[()]:
        """Nothing: the file is its ``file``'s (without this the engine, which looks for
        both methods, would skip ``needs`` and add no edge)."""
        return ()

    def needs(self) -> tuple[tuple[str], Sequence[str]]:
        """The managed ``file`` of its path comes first, else its nearest managed directory."""
        return (f"file:{self._path}",), path_uids("file:", self._path)


def _regex(field: str, text: str | None) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        at = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ParamError(
            field,
            f"{text!r} is not a valid regular expression: {exc.msg}{at}; Python's re syntax "
            r"is expected (escape a literal character such as ( [ . * + ? with \)",
        ) from None


def edit(
    p: LineParams,
    match: re.Pattern[str] | None,
    after: re.Pattern[str] | None,
    before: re.Pattern[str] | None,
    data: bytes,
) -> tuple[bytes, str] | None:
    """The new content and a summary, or None when ``data`` is right already. Bytes that
    are not UTF-8 pass through unchanged (surrogateescape)."""
    text = data.decode(errors="surrogateescape")
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    bodies = [line.rstrip("\n").removesuffix("\r") for line in lines]
    if p.state == "absent":
        if match is not None:
            gone = [i for i, body in enumerate(bodies) if match.search(body)]
        else:
            gone = [i for i, body in enumerate(bodies) if body == p.text]
        if not gone:
            return None
        drop = set(gone)
        kept = [line for i, line in enumerate(lines) if i not in drop]
        what = f"line {gone[0] + 1} removed" if len(gone) == 1 else f"{len(gone)} lines removed"
        return "".join(kept).encode(errors="surrogateescape"), what
    wanted = p.text or ""
    if match is not None:
        found = [i for i, body in enumerate(bodies) if match.search(body)]
        if found:
            i = found[-1]
            if bodies[i] == wanted:
                return None
            lines[i] = wanted + lines[i][len(bodies[i]) :]
            return "".join(lines).encode(errors="surrogateescape"), f"line {i + 1} replaced"
    if wanted in bodies:
        return None
    end = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    at = len(lines)
    if after is not None:
        hit = next((i for i, body in enumerate(bodies) if after.search(body)), None)
        at = at if hit is None else hit + 1
    elif before is not None:
        hit = next((i for i, body in enumerate(bodies) if before.search(body)), None)
        at = at if hit is None else hit
    if at == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += end  # the last line gets its line end before one follows it
    lines.insert(at, wanted + end)
    return "".join(lines).encode(errors="surrogateescape"), f"line {at + 1} added"


def _diff(path: str, old: bytes, new: bytes) -> str:
    """A unified diff of the file's old and new content."""
    import difflib

    return "".join(
        difflib.unified_diff(
            old.decode(errors="replace").splitlines(keepends=True),
            new.decode(errors="replace").splitlines(keepends=True),
            path,
            path,
            n=1,
        )
    )
