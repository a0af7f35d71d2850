"""What a policy's templates made of its secrets: the secret itself, or another form of
it (``urlencode``, ``upper``, a slice, a variable or a mapping that holds it), found
by rendering the same template again with every secret changed.

::

    other = render(text, shift_scope(scope, hidden))     # every secret changed
    found = forms(value, other)                          # where the two renderings part

:func:`shift_scope` replaces, in a copy of the scope, every occurrence of a secret (or
of a form found so far) inside any string, list or mapping, with :func:`shifted` of it:
each character changed (letters rotated by 13, digits by 5, anything else made ``x``
or ``y``), the length kept, so that what a filter or a slice makes of it changes too.
:func:`forms` compares the two renderings (strings in step, lists and mappings walked
together) and returns the parts of the first that differ, each at least
:data:`SHORTEST` characters, two parts closer than :data:`GAP` characters taken as
one. The loader keeps those parts as secrets of their own: reports, diffs and load
errors hide them as they hide the secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GAP", "SHORTEST", "forms", "shift_scope", "shifted"]

SHORTEST = 3  # a part shorter than this is not kept (a secret that short is hidden whole)
GAP = 3  # parts separated by fewer equal characters are one form (``p%40ss``)
_BY_LINE = 4096  # longer strings are compared a line at a time (the matcher is quadratic)
_DIGITS = "0123456789"


def shifted(text: str) -> str:
    """``text`` with every character changed, its length kept."""
    out = []
    for char in text:
        if "a" <= char <= "z":
            out.append(chr((ord(char) - 97 + 13) % 26 + 97))
        elif "A" <= char <= "Z":
            out.append(chr((ord(char) - 65 + 13) % 26 + 65))
        elif char in _DIGITS:
            out.append(_DIGITS[(int(char) + 5) % 10])
        else:
            out.append("y" if char == "x" else "x")
    return "".join(out)


def shift_scope(
    scope: Mapping[str, Any], hidden: Sequence[str], memo: dict[int, tuple[Any, Any]]
) -> dict[str, Any]:
    """A copy of ``scope`` with every occurrence of each of ``hidden`` (longest first) in
    a string, a list or a mapping :func:`shifted`. ``memo``: what lists and mappings
    became, by identity, for the same ``hidden`` (a scope's variables and facts are
    shared by every entry: each is walked once); a container with nothing to shift is
    itself."""
    ordered = sorted((h for h in hidden if h), key=len, reverse=True)
    return {name: _shift(value, ordered, memo) for name, value in scope.items()}


def _shift(value: Any, ordered: list[str], memo: dict[int, tuple[Any, Any]]) -> Any:
    if isinstance(value, str):
        for secret in ordered:
            if secret in value:
                value = value.replace(secret, shifted(secret))
        return value
    if not isinstance(value, (Mapping, list, tuple)):
        return value
    known = memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    result: Any
    if isinstance(value, Mapping):
        items = {key: _shift(item, ordered, memo) for key, item in value.items()}
        same = all(items[key] is item for key, item in value.items())
        result = value if same else items
    else:
        made = [_shift(item, ordered, memo) for item in value]
        same = all(a is b for a, b in zip(made, value, strict=True))
        result = value if same else type(value)(made)
    memo[id(value)] = (value, result)  # the value itself is held: its id stays its own
    return result


def forms(value: Any, other: Any) -> list[str]:
    """The parts of ``value``'s strings that differ from ``other``'s (rendered with the
    secrets shifted); where the two differ in shape, every string of ``value``."""
    found: list[str] = []
    _walk(value, other, found)
    return found


def _walk(value: Any, other: Any, found: list[str]) -> None:
    if isinstance(value, str):
        if isinstance(other, str):
            found.extend(_parts(value, other))
        elif len(value) >= SHORTEST:
            found.append(value)
    elif isinstance(value, Mapping):
        same = isinstance(other, Mapping) and list(other) == list(value)
        for key, item in value.items():
            _walk(item, other[key] if same else None, found)
    elif isinstance(value, (list, tuple)):
        same = isinstance(other, (list, tuple)) and len(other) == len(value)
        for i, item in enumerate(value):
            _walk(item, other[i] if same else None, found)


def _parts(a: str, b: str) -> list[str]:
    if a == b:
        return []
    if len(a) > _BY_LINE or len(b) > _BY_LINE:
        lines_a, lines_b = a.split("\n"), b.split("\n")
        if len(lines_a) == len(lines_b) and len(lines_a) > 1:
            return [part for x, y in zip(lines_a, lines_b, strict=True) for part in _parts(x, y)]
        return _trimmed(a, b)
    from difflib import SequenceMatcher

    spans: list[list[int]] = []
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag == "equal":  # (an insert marks where b has more: a span of no width)
            continue
        if spans and i1 - spans[-1][1] < GAP:
            spans[-1][1] = max(spans[-1][1], i2)
        else:
            spans.append([i1, i2])
    return [a[i:j] for i, j in spans if j - i >= SHORTEST]


def _trimmed(a: str, b: str) -> list[str]:
    """The part of ``a`` between what it shares with ``b`` at either end."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    part = a[start : len(a) - end]
    return [part] if len(part) >= SHORTEST else []
