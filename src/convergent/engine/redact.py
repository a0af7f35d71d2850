"""Secrets never reach a report: the engine hides them before the reporter sees one.

A kind marks an output secret (``Output(str, secret=True)``, the ``password`` kind's
``password``). The engine knows every secret stored in the state database from the start
of a run (a command may print one before the resource that holds it ran in this run),
remembers every value such an output had in this run (:class:`Secrets`) and, once there
is one, passes each report through :func:`hide_report`:

- every occurrence of a secret value in a summary, a diff, a log line or an error
  message becomes ``<secret>``, and so does each line of 8 or more characters of a
  multi-line secret (a key file: a command's output is logged a line at a time); where a
  command's output was cut short (``[...]``), as many characters beside the cut as the
  longest secret has, less one, are dropped, whatever they are;
- the diff of a resource that *received* a secret (``recv`` from a secret output) is
  replaced by a note, ``content changed (secret)``: a diff of its content would show the
  secret in pieces, or the value it replaced.

The original Change (a file's holds the bytes it writes) is not kept in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from convergent.engine.report import Changed, ChangeText, Failed, Log, Report, WouldChange
from convergent.errors import CommandError, ResourceError
from convergent.resources.base import Change

__all__ = ["SECRET", "Secrets", "hide_report"]

SECRET = "<secret>"
CUT = "[...]"  # where host/process.py cut a command's output short (process.CUT)
_STREAMS = ("stdout: ", "stderr: ")  # how a command's logged lines begin (same length)
_FRAGMENT = 4  # a run this long that occurs in a secret counts as a piece of it
_LINE = 8  # a line of a multi-line secret this long is hidden on its own (not "}")


class Secrets:
    """The values of secret outputs seen so far in a run, and how to hide them in text."""

    __slots__ = ("_ordered", "values")

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._ordered: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.values)

    def add(self, value: object) -> None:
        self.update((value,))

    def update(self, values: Iterable[object]) -> None:
        """Remember each of ``values`` (sorted once, however many)."""
        before = len(self.values)
        for value in values:
            text = value if isinstance(value, str) else str(value)
            if text:
                self.values.add(text)
            if text.strip() and text.strip() != text:  # ``pw: |`` ends with a newline
                self.values.add(text.strip())
            if "\n" in text:  # output is logged a line at a time: each line is a secret
                self.values.update(line for line in text.splitlines() if len(line.strip()) >= _LINE)
        if len(self.values) != before:
            self._ordered = sorted(self.values, key=len, reverse=True)

    def hide(self, text: str) -> str:
        """``text`` with every known secret replaced by ``<secret>`` (longest first), and
        the characters next to a cut (``[...]``) that could be a piece of one dropped."""
        for value in self._ordered:
            if value in text:
                text = text.replace(value, SECRET)
        if CUT in text and self._ordered:
            text = self._around_cuts(text)
        return text

    def _around_cuts(self, text: str) -> str:
        """A command's output cut short (``[...]``: the log's first 64 KiB end inside a
        line, an error's tail starts inside one) may leave a piece of a secret beside the
        cut. As many characters as the longest secret has, less one, go on the side the
        text was cut (before a cut that ends its line, else after it), whatever they are:
        a rule that looked at them would tell, piece by piece, what a secret begins or
        ends with. A line's ``stdout: `` or ``stderr: `` stays."""
        width = len(self._ordered[0]) - 1
        parts = text.split(CUT)
        for i in range(len(parts) - 1):
            before, after = parts[i], parts[i + 1]
            if after == "" or after.startswith("\n"):  # the cut ended its line
                start = before.rfind("\n") + 1
                if before.startswith(_STREAMS, start):
                    start += len(_STREAMS[0])
                parts[i] = before[: max(start, len(before) - width)]
            else:
                end = after.find("\n")
                parts[i + 1] = after[min(width, len(after) if end < 0 else end) :]
        return CUT.join(parts)

    def hide_fragments(self, text: str) -> str:
        """``text`` with every run of 4 or more characters found inside a secret hidden too.

        For what a resource holding a secret says about itself: a summary may show its
        parameter shortened or quoted (``would run: sh -c 'abc...'``), and a piece of a
        secret is still a leak.
        """
        text = self.hide(text)
        out: list[str] = []
        i = 0
        while i < len(text):
            length = 0
            while i + length < len(text) and any(
                text[i : i + length + 1] in value for value in self._ordered
            ):
                length += 1
            if length >= _FRAGMENT:
                out.append(SECRET)
                i += length
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


class _HiddenChange(Change):
    """A Change as a report may show it: texts hidden, the diff hidden when first read
    (a file's diff is only computed when someone reads it, and stays so)."""

    def __init__(
        self,
        summary: str,
        original: Change | ChangeText | None,
        secrets: Secrets,
        note: str | None,
        members: dict[str, Change] | None,
    ) -> None:
        self._original = original  # None when ``note`` replaces the diff
        self._secrets = secrets
        self._note = note
        super().__init__(summary, None, members)

    @property
    def diff(self) -> str | None:
        if self._original is None:
            return self._note
        diff = self._original.diff
        return None if diff is None else self._secrets.hide(diff)

    @diff.setter
    def diff(self, value: str | None) -> None:
        if value is not None:  # set after the report was made: take it as given, hidden
            self._original = Change("", self._secrets.hide(value))


def _hide_change(
    resource: str,
    change: Change | ChangeText,
    secrets: Secrets,
    held: Mapping[str, tuple[str, ...]],
) -> Change:
    members = None
    if change.members is not None:
        members = {
            member: _hide_change(member, c, secrets, held) for member, c in change.members.items()
        }
    params = held.get(resource)
    summary = (secrets.hide_fragments if params else secrets.hide)(change.summary)
    if params:  # it holds a secret: no diff at all, only a note when there was one
        note = f"{', '.join(params)} changed (secret)" if change.diff is not None else None
        return _HiddenChange(summary, None, secrets, note, members)
    return _HiddenChange(summary, change, secrets, None, members)


def _chain_texts(error: BaseException) -> list[str]:
    """The messages of ``error`` and every exception behind it (cause or context)."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(str(current))
        if isinstance(current, CommandError):
            texts.append(current.stderr_tail)
        current = current.__cause__ or current.__context__
    return texts


def _hide_error(resource: str, error: BaseException, hide: Callable[[str], str]) -> BaseException:
    if all(hide(text) == text for text in _chain_texts(error)):
        return error
    hidden: ResourceError
    if isinstance(error, CommandError):
        hidden = CommandError(
            error.resource, hide(error.message), error.exit_code, hide(error.stderr_tail)
        )
    elif isinstance(error, ResourceError):
        hidden = ResourceError(error.resource, hide(error.message))
    else:
        hidden = ResourceError(resource, hide(str(error)))
    hidden.__suppress_context__ = True  # the originals hold the secret: none is passed on
    return hidden


def hide_report(report: Report, secrets: Secrets, held: Mapping[str, tuple[str, ...]]) -> Report:
    """``report`` with every secret hidden. ``held``: receiver -> its parameters that
    received a secret output."""
    resource = getattr(report, "resource", None)
    hide = secrets.hide_fragments if resource is not None and held.get(resource) else secrets.hide
    if isinstance(report, Changed):
        change = _hide_change(report.resource, report.change, secrets, held)
        return Changed.of(report.resource, hide(report.summary), change, report.seconds)
    if isinstance(report, WouldChange):
        if report.change is None:
            return report
        change = _hide_change(report.resource, report.change, secrets, held)
        return WouldChange(report.resource, ChangeText.of(change), report.refreshes)
    if isinstance(report, Log):
        return Log(report.resource, hide(report.message))
    if isinstance(report, Failed):
        return Failed.of(report.resource, _hide_error(report.resource, report.error, hide))
    return report
