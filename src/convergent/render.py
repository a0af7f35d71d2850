"""Text output of a run: one line per report, written and flushed as it happens.

::

    file[/tmp/demo/f1]: created
    exec[build]: ran (0.01 s)
    noop[done]: notified by exec[build]
    file[/tmp/demo/f2]: would change: content
        --- /tmp/demo/f2
        +++ /tmp/demo/f2
        ...
      would refresh exec[build]
    exec[migrate]: may run (its guard runs a command; upstream file[/etc/db] would change)
    exec[build]: FAILED: exited with 1                      (stderr)
    file[/tmp/demo/out]: blocked: exec[build] failed        (stderr)

A change of a group of resources (autogrouping) is printed as one line per member, under
the member's own ``kind[name]``.

Diffs are coloured (with rich, imported only then) when the stream is a terminal.

Nothing a policy or a command says can forge a line or reach the terminal raw: every
control character is written escaped (``\\n``, ``\\x1b``, ``\\u202e``; tabs stay), in
names, summaries, errors, log lines and diffs alike. A text of several lines (an error,
a diff, a command's output) is split at its newlines and its later lines are indented,
so a line that starts at the left margin always starts a report. :func:`say` prints a
message by the same rules (the CLI prints its own errors with it).

Under systemd, when a stream is the journal (``$JOURNAL_STREAM`` names its device and
inode), every line starts with its syslog priority, ``<3>`` for failures and errors,
``<4>`` for blocked resources, ``<6>`` for the rest, so ``journalctl -p err`` finds them.
:class:`JsonRenderer` (``--log-format json``) writes the same reports as JSON lines.

When the reader of the command's stdout or stderr is gone (a closed pipe, a hung-up
terminal, an ended SSH session), its descriptor is pointed at /dev/null and the run goes
on (:func:`outlive_readers`): what it keeps true and its history (``convergent
history``) do not depend on anyone reading its output, and SIGTERM still stops it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
from typing import IO, Any

from convergent.engine.report import (
    Blocked,
    Changed,
    ChangeText,
    Converged,
    Failed,
    Log,
    MayChange,
    Report,
    WouldChange,
)
from convergent.errors import CommandError, ResourceError
from convergent.resources.base import Change

__all__ = [
    "WATCHING",
    "JsonRenderer",
    "TextRenderer",
    "error_text",
    "escape",
    "journal_stream",
    "may_text",
    "outlive_readers",
    "say",
]

ERR, WARNING, INFO = 3, 4, 6  # syslog priorities

WATCHING = "converged; watching for changes (Ctrl-C to stop)"

# C0 (but tab), DEL, C1, the line and paragraph separators, the bidirectional controls
_CONTROL = "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
_control: re.Pattern[str] | None = None  # compiled on first use


def escape(text: str) -> str:
    """``text`` as one line, every control character escaped as Python writes it (tabs stay)."""
    global _control
    if text.isprintable():
        return text
    if _control is None:
        _control = re.compile(_CONTROL)
    return _control.sub(lambda m: repr(m.group())[1:-1], text)


def say(message: str, file: IO[str] | None = None) -> None:
    """Print ``message`` (to stderr by default) escaped, later lines indented; flush."""
    TextRenderer._write(sys.stderr if file is None else file, _prefixed("", message))


def error_text(resource: str, error: BaseException) -> str:
    """The message of ``error`` without a repeated ``kind[name]:`` prefix."""
    if isinstance(error, ResourceError) and error.resource == resource:
        return error.message
    return str(error) or type(error).__name__


def journal_stream(stream: IO[str]) -> bool:
    """Whether ``stream`` is the journal: its file is the one ``$JOURNAL_STREAM`` names."""
    import os

    named = os.environ.get("JOURNAL_STREAM")
    if not named:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (a StringIO), or closed
        return False
    return named == f"{st.st_dev}:{st.st_ino}"


def _lines(text: str) -> list[str]:
    """``text`` split at its newlines only (other separators are escaped, not obeyed)."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line for line in _lines(text)]


def _prefixed(prefix: str, text: str) -> list[str]:
    """``prefix`` before the first line of ``text``; later lines indented under it."""
    first, *rest = _lines(text) or [""]
    return [prefix + first, *("    " + line for line in rest)]


def _diff_style(line: str) -> str | None:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    if line.startswith("@@"):
        return "cyan"
    return None


class TextRenderer:
    """A reporter (see :mod:`convergent.engine.report`) that prints each report as a line.

    ``out`` gets changes and progress, ``err`` failures and blocked resources (default:
    ``sys.stdout`` and ``sys.stderr``). ``watching``: the run keeps going after it
    converged, so say so once when it first converges, and say "converged" again only
    after something happened (a change, a failure), not after every quiet re-check.
    ``color``: colour diffs; None (the default) colours them when ``out`` is a terminal.
    ``diff``: print the diff of each change made too (``run --diff``), as noop prints the
    diff of each change it would make; secrets are hidden before a report gets here.
    ``quiet`` (``run --quiet``, an attribute): no line for a change made, a log line or
    a convergence; failures, blocked resources and what noop would change still show.
    """

    def __init__(
        self,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        *,
        watching: bool = False,
        color: bool | None = None,
        diff: bool = False,
    ) -> None:
        self.out: IO[str] = out if out is not None else sys.stdout
        self.err: IO[str] = err if err is not None else sys.stderr
        self.watching = watching
        self.color = color
        self.show_diff = diff
        self.would_change: set[str] = set()  # resources reported by WouldChange (noop)
        self.may_change: set[str] = set()  # resources reported by MayChange (noop)
        self.quiet = False  # --quiet: no line per change, log line or convergence
        self._converged_once = False
        self._activity = False  # something was reported since the last "converged" line
        self._console: Any = None  # rich.console.Console, created on first coloured diff
        self._journal = {id(s): journal_stream(s) for s in (self.out, self.err)}

    def __call__(self, report: Report) -> None:
        if self.quiet and isinstance(report, Changed | Log | Converged):
            return
        if isinstance(report, Changed):
            self._activity = True
            members = report.change.members
            if members:  # a group: each member under its own name
                for member, change in members.items():
                    self._line(self.out, f"{member}: {change.summary}")
                    if self.show_diff and change.diff:
                        self._diff(change.diff)
            else:
                self._line(self.out, f"{report.resource}: {report.summary}")
                if self.show_diff and report.change.diff:
                    self._diff(report.change.diff)
        elif isinstance(report, WouldChange):
            self._activity = True
            self._would_change(report)
        elif isinstance(report, Failed):
            self._activity = True
            self._failed(report)
        elif isinstance(report, Blocked):
            self._activity = True
            self._line(self.err, f"{report.resource}: blocked: {report.upstream} failed", WARNING)
        elif isinstance(report, Log):
            self._emit(self.out, _prefixed(f"{report.resource}: ", report.message))
        elif isinstance(report, Converged):
            self._converged(report)
        elif isinstance(report, MayChange):
            self._activity = True
            self.may_change.add(report.resource)
            self._line(self.out, may_text(report))
            for target in report.refreshes:
                self._line(self.out, f"  may refresh {target}")

    # -- one method per report ----------------------------------------------------------

    def _would_change(self, report: WouldChange) -> None:
        change = report.change
        if change is not None and change.members:  # a group: each member under its own name
            for member, member_change in change.members.items():
                self.would_change.add(member)
                self._would_change_line(member, member_change)
            prefix = "  "
        elif change is not None:
            self.would_change.add(report.resource)
            self._would_change_line(report.resource, change)
            prefix = "  "
        else:
            self.would_change.add(report.resource)
            prefix = f"{report.resource}: "
        for target in report.refreshes:
            self._line(self.out, f"{prefix}would refresh {target}")

    def _would_change_line(self, resource: str, change: Change | ChangeText) -> None:
        summary = change.summary
        if not summary.startswith("would "):  # exec says "would run: make"
            summary = f"would change: {summary}"
        self._line(self.out, f"{resource}: {summary}")
        if change.diff:
            self._diff(change.diff)

    def noop_summary(self, nothing_changed: str) -> None:
        """The last line of a noop run: ``noop: 4 would change, 1 may change; nothing was
        changed`` (a resource that may change is not counted as would)."""
        would, may = self.noop_counts()
        self.note(
            f"noop: {would} would change, {may} may change; {nothing_changed}", event="summary"
        )

    def noop_counts(self) -> tuple[int, int]:
        """How many resources would change, and how many more may change."""
        return len(self.would_change), len(self.may_change - self.would_change)

    def _failed(self, report: Failed) -> None:
        text = error_text(report.resource, report.error)
        out = _prefixed(f"{report.resource}: FAILED: ", text)
        error = report.error
        if isinstance(error, CommandError) and error.stderr_tail.strip():
            tail = error.stderr_tail.strip()
            if tail not in text:
                out.extend(_indent(tail, "    "))
        self._emit(self.err, out, ERR)

    def _converged(self, report: Converged) -> None:
        if not self.watching:
            return
        if self._converged_once and not self._activity:
            return
        self._activity = False
        if report.failed or report.blocked:
            state = f"settled with {report.failed} failed, {report.blocked} blocked"
        else:
            state = "converged"
        if not self._converged_once:
            self._converged_once = True
            self._line(self.out, WATCHING.replace("converged", state, 1))
        else:
            self._line(self.out, state)

    # -- writing ------------------------------------------------------------------------

    def _diff(self, diff: str) -> None:
        if self._use_color():
            self._color_diff(diff)
        else:
            self._emit(self.out, _indent(diff, "    "))

    def _use_color(self) -> bool:
        if self.color is None:
            isatty = getattr(self.out, "isatty", None)
            self.color = bool(isatty and isatty())
        return self.color

    def _color_diff(self, diff: str) -> None:
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:  # rich is optional: plain diff
            self.color = False
            self._emit(self.out, _indent(diff, "    "))
            return
        if self._console is None:
            self._console = Console(
                file=self.out, force_terminal=True, highlight=False, soft_wrap=True
            )
        try:
            for line in _lines(diff):
                style = _diff_style(line)
                self._console.print(Text("    " + escape(line), style=style or ""))
            self.out.flush()
        except OSError as exc:
            if not (_OUTLIVE and _reader_gone(self.out, exc)):
                raise

    def note(self, message: str, *, error: bool = False, event: str = "message") -> None:
        """A message of the command itself (``policy reloaded: ...``), escaped like the rest:
        on ``err`` when ``error``. ``event`` names it for a structured log."""
        stream, priority = (self.err, ERR) if error else (self.out, INFO)
        self._emit(stream, _prefixed("", message), priority)

    def _line(self, stream: IO[str], line: str, priority: int | None = None) -> None:
        self._emit(stream, [line], priority)

    def _emit(self, stream: IO[str], lines: list[str], priority: int | None = None) -> None:
        if self._journal.get(id(stream)):
            if priority is None:
                priority = ERR if stream is self.err else INFO
            lines = [f"<{priority}>{line}" for line in lines]
        self._write(stream, lines)

    @staticmethod
    def _write(stream: IO[str], lines: list[str]) -> None:
        """Write ``lines``, each escaped (a newline inside one is shown, not obeyed)."""
        _put(stream, "".join(escape(line) + "\n" for line in lines))


class JsonRenderer(TextRenderer):
    """A reporter that writes each report as one JSON object per line, all on ``out``.

    Every line has ``time`` (UTC, RFC 3339), ``level`` (``info``, ``warning``, ``error``),
    ``host``, ``resource`` (``kind[name]``, null for the command's own messages),
    ``event`` (``changed``, ``would_change``, ``failed``, ``blocked``, ``log``,
    ``converged``, ``message``, ``summary``, ``may_change``) and ``summary`` (the text
    line the text format prints; ``converged`` once, then again only after something
    happened); some events add fields (``diff``, ``refreshes``, ``seconds``,
    ``exit_code``, ``stderr_tail``, ``failed``, ``blocked``; ``reason`` of a
    ``may_change``; ``would_change`` and ``may_change`` counts in a noop ``summary``).
    Non-ASCII is escaped, so no character of a policy or a command reaches the log raw.
    Never coloured.
    """

    def __init__(
        self, out: IO[str] | None = None, *, watching: bool = False, diff: bool = False
    ) -> None:
        super().__init__(out, out, watching=watching, color=False, diff=diff)
        import os

        self.host = os.uname().nodename

    def __call__(self, report: Report) -> None:
        if self.quiet and isinstance(report, Changed | Log | Converged):
            return
        if not isinstance(report, Log | Converged):
            self._activity = True
        if isinstance(report, Changed):
            members = report.change.members
            if members:
                for member, change in members.items():
                    diff = change.diff if self.show_diff else None
                    self._event(
                        "changed", member, change.summary, seconds=report.seconds, diff=diff
                    )
            else:
                diff = report.change.diff if self.show_diff else None
                self._event(
                    "changed", report.resource, report.summary, seconds=report.seconds, diff=diff
                )
        elif isinstance(report, WouldChange):
            self._json_would_change(report)
        elif isinstance(report, Failed):
            error = report.error
            fields: dict[str, Any] = {}
            if isinstance(error, CommandError):
                fields = {"exit_code": error.exit_code, "stderr_tail": error.stderr_tail}
            text = error_text(report.resource, error)
            self._event("failed", report.resource, text, ERR, **fields)
        elif isinstance(report, Blocked):
            text = f"blocked: {report.upstream} failed"
            self._event("blocked", report.resource, text, WARNING, upstream=report.upstream)
        elif isinstance(report, Log):
            self._event("log", report.resource, report.message)
        elif isinstance(report, MayChange):
            self.may_change.add(report.resource)
            self._event(
                "may_change",
                report.resource,
                may_text(report),
                reason=report.reason,
                refreshes=list(report.refreshes),
            )
        elif isinstance(report, Converged):
            if self._converged_once and not self._activity:
                return  # a quiet re-check: said already
            self._converged_once, self._activity = True, False
            if report.failed or report.blocked:
                text = f"settled with {report.failed} failed, {report.blocked} blocked"
            else:
                text = "converged"
            level = WARNING if report.failed or report.blocked else INFO
            self._event(
                "converged", None, text, level, failed=report.failed, blocked=report.blocked
            )

    def _json_would_change(self, report: WouldChange) -> None:
        change = report.change
        refreshes = list(report.refreshes)
        if change is not None and change.members:
            for member, member_change in change.members.items():
                self.would_change.add(member)
                self._event("would_change", member, member_change.summary, diff=member_change.diff)
        else:
            self.would_change.add(report.resource)
            summary = change.summary if change is not None else "would change"
            diff = change.diff if change is not None else None
            self._event("would_change", report.resource, summary, diff=diff, refreshes=refreshes)

    def note(self, message: str, *, error: bool = False, event: str = "message") -> None:
        self._event(event, None, message, ERR if error else INFO)

    def noop_summary(self, nothing_changed: str) -> None:
        would, may = self.noop_counts()
        text = f"noop: {would} would change, {may} may change; {nothing_changed}"
        self._event("summary", None, text, would_change=would, may_change=may)

    def _event(
        self,
        event: str,
        resource: str | None,
        summary: str,
        priority: int = INFO,
        **fields: Any,
    ) -> None:
        import json
        import time

        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        record = {
            "time": f"{stamp}.{int(now % 1 * 1000):03d}Z",
            "level": {ERR: "error", WARNING: "warning"}.get(priority, "info"),
            "host": self.host,
            "resource": resource,
            "event": event,
            "summary": summary,
            **{k: v for k, v in fields.items() if v is not None and v != []},
        }
        line = json.dumps(record, ensure_ascii=True)
        if self._journal.get(id(self.out)):
            line = f"<{priority}>{line}"
        _put(self.out, line + "\n")


_OUTLIVE: list[bool] = []  # set by outlive_readers(): the command's own output only


def outlive_readers() -> None:
    """From now on, when the reader of this process's stdout or stderr is gone (a closed
    pipe or socket, a hung-up terminal), that descriptor is pointed at /dev/null and the
    write that found it out is dropped, instead of failing the report. ``convergent``
    calls it at its start; a program that embeds convergent keeps its own output as it
    had it (the error reaches it)."""
    if not _OUTLIVE:
        _OUTLIVE.append(True)


def _put(stream: IO[str], text: str) -> None:
    """Write ``text`` and flush it (see :func:`outlive_readers` for a reader gone)."""
    try:
        stream.write(text)
        stream.flush()
    except OSError as exc:
        if not (_OUTLIVE and _reader_gone(stream, exc)):
            raise


def _reader_gone(stream: IO[str], exc: OSError) -> bool:
    """Whether ``exc`` says that the reader of this process's stdout or stderr is gone:
    then the descriptor now points at /dev/null (what is still buffered flushes there)."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):  # no descriptor (a stream in memory)
        return False
    if fd not in (1, 2):
        return False
    if exc.errno in (errno.EPIPE, errno.ECONNRESET):
        pass  # a pipe or a socket with no reader (a file never says so)
    elif not (exc.errno == errno.EIO and stat.S_ISCHR(st.st_mode)):
        return False  # EIO from a file is a failing disk: said, not hidden
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return True  # dropped this time; the next write tries again
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
    with contextlib.suppress(OSError):
        stream.flush()
    return True


def may_text(report: MayChange) -> str:
    """``exec[x]: may run (its guard runs a command; upstream file[/etc/y] would change)``."""
    return f"{report.resource}: {report.summary} ({report.reason})"
