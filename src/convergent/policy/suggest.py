""" "Did you mean": the closest of a set of names, in bounded work per word.

:func:`difflib.get_close_matches` compares a word with every candidate, so a policy with
N missing references among N resources costs N² comparisons (2,000 took a minute). A
:class:`Suggester` compares a word with at most ``limit`` candidates: all of them when
there are that few (exactly difflib's answer), else a shortlist of

- the names one edit away (a character changed, added, removed, or two swapped), found
  in a hash index of each name's one-character deletions, built once, bounded in size;
- the names next to the word in sorted order (a shared start) and in sorted order of
  the reversed names (a shared end).

A typo in one name is found among any number of names; the total work is linear in the
number of names and of words looked up.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

__all__ = ["LIMIT", "Suggester", "close_match"]

#: Candidates compared with one word at most.
LIMIT = 32
# Longer words get no suggestion (difflib's work grows with the square of the length),
# longer names are not in the edit index.
_LONGEST = 200
_INDEXED = 64
_INDEX_BUDGET = 200_000  # deletion keys in the edit index, at most


def close_match(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    return Suggester(candidates).hint(word)


class Suggester:
    """The closest of ``candidates`` to a word, comparing it with at most ``limit`` of them."""

    __slots__ = ("_index", "_limit", "_names", "_reversed", "_sorted")

    def __init__(self, candidates: Iterable[str], limit: int = LIMIT) -> None:
        self._names = list(dict.fromkeys(candidates))
        self._limit = limit
        self._sorted: list[str] | None = None
        self._reversed: list[str] = []
        self._index: dict[int, list[int]] = {}

    def hint(self, word: str) -> str:
        """`` (did you mean 'x'?)``, or an empty string when nothing is close."""
        if len(word) > _LONGEST:
            return ""
        import difflib  # only when something is missing: it costs start-up time

        found = difflib.get_close_matches(word, self.shortlist(word), n=1)
        return f" (did you mean '{found[0]}'?)" if found else ""

    def shortlist(self, word: str) -> list[str]:
        """The candidates ``word`` is compared with: at most ``limit`` of them."""
        names = self._names
        if len(names) <= self._limit:
            return names
        if self._sorted is None:
            self._build()
        chosen: dict[str, None] = {}
        for i in self._near(word):
            if len(chosen) >= self._limit // 2:
                break
            chosen[names[i]] = None
        room = (self._limit - len(chosen)) // 4
        assert self._sorted is not None
        for ordered, key, flip in ((self._sorted, word, False), (self._reversed, word[::-1], True)):
            at = bisect.bisect_left(ordered, key)
            for name in ordered[max(0, at - room) : at + room]:
                chosen[name[::-1] if flip else name] = None
        return list(chosen)[: self._limit]

    def _build(self) -> None:
        names = self._names
        self._sorted = sorted(names)
        self._reversed = sorted(name[::-1] for name in names)
        index = self._index
        budget = _INDEX_BUDGET
        for i, name in enumerate(names):
            if len(name) > _INDEXED:
                continue
            budget -= len(name) + 1
            if budget < 0:
                break
            for key in _deletions(name):
                index.setdefault(key, []).append(i)

    def _near(self, word: str) -> Iterable[int]:
        """Candidates one edit from ``word`` (hash collisions aside: difflib decides)."""
        if len(word) > _INDEXED + 1:
            return
        index = self._index
        seen: set[int] = set()
        for key in _deletions(word):
            for i in index.get(key, ())[: self._limit]:
                if i not in seen:
                    seen.add(i)
                    yield i


def _deletions(name: str) -> set[int]:
    """Hashes of ``name`` and of ``name`` with one character removed."""
    return {hash(name), *(hash(name[:i] + name[i + 1 :]) for i in range(len(name)))}
