"""Permission modes as chmod(1) reads them: octal (``0644``) or symbolic (``u=rw,g=r,o=``,
``a+x``, ``go-w``, ``u+rX``). Pure: no I/O.

::

    mode = modes.parse("u=rw,go=r")        # raises ValueError with a hint
    mode.apply(0o600, directory=False)      # 0o644

Symbolic clauses follow GNU chmod exactly (gnulib's ``mode_adjust``): ``[ugoa]*`` then
one or more of ``[-+=]`` with ``[rwxXst]*`` or one of ``u``, ``g``, ``o`` (copy those
bits); clauses are separated by commas and applied in order. With no ``ugoa`` the umask
limits what ``+``/``-``/``=`` change, as chmod does. ``X`` sets execute only on a
directory or on a file some class can already execute. ``=`` on a directory keeps its
setuid/setgid bits unless ``s`` is named. An octal mode is taken as it is.
"""

from __future__ import annotations

__all__ = ["Mode", "parse", "with_search"]

_ALL = 0o7777
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": _ALL}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}
_COPY = {"u": 0o700, "g": 0o070, "o": 0o007}
_ORDINARY, _COPY_EXISTING, _X_IF_ANY_X = 0, 1, 2
HINT = (
    'expected an octal mode like "0644" or a symbolic one like "u=rw,g=r,o=", '
    '"a+x" or "go-w" (who: u g o a; op: + - =; perms: r w x X s t)'
)


class Mode:
    """A parsed mode. ``octal``: the fixed bits of an octal mode (None when symbolic)."""

    __slots__ = ("_changes", "octal", "text")

    def __init__(
        self, text: str, octal: int | None, changes: tuple[tuple[str, int, int, int], ...]
    ) -> None:
        self.text = text
        self.octal = octal
        self._changes = changes  # (op, flag, affected, value)

    def apply(self, old: int, *, directory: bool, umask: int = 0o022) -> int:
        """The permission bits after applying this mode to ``old`` (a file's bits, or a
        directory's with ``directory``), as ``chmod`` would."""
        if self.octal is not None:
            return self.octal
        new = old & _ALL
        for op, flag, affected, value in self._changes:
            mentioned = affected & value if affected else value
            omit = (0o6000 if directory else 0) & ~mentioned
            if flag == _COPY_EXISTING:
                value &= new
                value |= (
                    (0o444 if value & 0o444 else 0)
                    | (0o222 if value & 0o222 else 0)
                    | (0o111 if value & 0o111 else 0)
                )
            elif flag == _X_IF_ANY_X and (new & 0o111 or directory):
                value |= 0o111
            value &= (affected if affected else ~umask & _ALL) & ~omit
            if op == "=":
                preserved = (~affected & _ALL if affected else 0) | omit
                new = (new & preserved) | value
            elif op == "+":
                new |= value
            else:
                new &= ~value
        return new

    def __repr__(self) -> str:
        return f"Mode({self.text!r})"


_PARSED: dict[str, Mode] = {}  # a policy gives a few modes to many resources
_KEPT = 4096  # distinct spellings kept at most


def parse(text: str) -> Mode:
    """Parse an octal or symbolic mode; ValueError (saying what is wrong) otherwise.

    A :class:`Mode` is never changed: the same text gives the same object."""
    mode = _PARSED.get(text)
    if mode is None:
        mode = _parse(text)
        if len(_PARSED) < _KEPT:
            _PARSED[text] = mode
    return mode


def _parse(text: str) -> Mode:
    if text and all(c in "01234567" for c in text):
        if len(text) not in (3, 4):
            raise ValueError(f"an octal mode has 3 or 4 digits, got {text!r}; {HINT}")
        return Mode(text, int(text, 8), ())
    changes: list[tuple[str, int, int, int]] = []
    for clause in text.split(","):
        i = 0
        who = 0
        while i < len(clause) and clause[i] in _WHO:
            who |= _WHO[clause[i]]
            i += 1
        if i == len(clause) or clause[i] not in "+-=":
            where = f"at {clause[i]!r} in" if i < len(clause) else "at the end of"
            raise ValueError(f"bad mode {text!r}: expected + - or = {where} {clause!r}; {HINT}")
        while i < len(clause) and clause[i] in "+-=":
            op = clause[i]
            i += 1
            if i < len(clause) and clause[i] in _COPY:
                changes.append((op, _COPY_EXISTING, who, _COPY[clause[i]]))
                i += 1
                continue
            flag, value = _ORDINARY, 0
            while i < len(clause) and clause[i] in "rwxXst":
                if clause[i] == "X":
                    flag = _X_IF_ANY_X
                else:
                    value |= _PERM[clause[i]]
                i += 1
            changes.append((op, flag, who, value))
        if i != len(clause):
            raise ValueError(f"bad mode {text!r}: unexpected {clause[i]!r} in {clause!r}; {HINT}")
    return Mode(text, None, tuple(changes))


def with_search(mode: int) -> int:
    """A directory's bits for an octal mode given to a tree: execute (search) wherever
    read is given, as ``chmod X`` and Puppet's recursive ``mode`` do (0644 -> 0755)."""
    return mode | ((mode & 0o444) >> 2)
