"""``note``: a kind from outside convergent, found through the ``convergent.kinds`` entry
points. It keeps a file holding the text it was asked for.

The package is never installed: its ``.dist-info`` beside it, on ``PYTHONPATH``, is what
makes ``importlib.metadata`` (and so convergent) see its entry points.
"""

from __future__ import annotations

from pathlib import Path

from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["Note", "NoteParams", "Shout"]


class NoteParams(Params, frozen=True):
    """Parameters of ``note``.

    path: the file that holds the note
    text: what it says
    """

    path: str
    text: str


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


class Note(Resource[NoteParams], kind="note"):
    """Keeps ``path`` holding ``text``."""

    def wanted(self) -> str:
        return self.params.text + "\n"

    async def check(self, ctx: Context) -> Change | None:
        current = _read(self.params.path)
        if current == self.wanted():
            return None
        return Change("noted" if current is None else "renoted")

    async def apply(self, ctx: Context, change: Change) -> str | None:
        _write(self.params.path, self.wanted())
        return None


class Shout(Note, kind="shout"):
    """A note in capitals (registered by ``module:Class``)."""

    def wanted(self) -> str:
        return self.params.text.upper() + "\n"
