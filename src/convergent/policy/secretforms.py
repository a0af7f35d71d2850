"""What a policy's templates made of its secrets: the secret itself, or another form of
it (``urlencode``, ``upper``, a slice, a variable or a mapping that holds it), found
by rendering the same template again with every secret changed.

::

    other = render(text, shift_scope(scope, secrets, memo))   # every secret changed
    found = forms(value, other)                                # where the two part

:func:`shift_scope` replaces, in a copy of the scope, every occurrence of a secret
inside any string, list or dict with :func:`shifted` of it: each character made one of
Unicode's private use area, the length kept, so that what a filter or a slice makes of
it changes too and nothing in the template's own text lines up with it by chance (a
template that needs letters or digits, ``int``, gets a second try with letters and
digits rotated). The loader also gives a variable or bundle parameter that showed a
secret its own second rendering, whatever its type (``Site.shifted_as``). :func:`forms`
compares the two renderings (strings in step, lists and dicts walked together) and
returns the parts of the first that differ, each on its own and, where parts are
closer than :data:`GAP` characters, together, each of :data:`SHORTEST` to
:data:`LONGEST` characters. The loader keeps them as secrets of their own: reports,
diffs and load errors hide them as they hide the secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GAP", "SHORTEST", "forms", "shift_scope", "shifted"]

SHORTEST = 3  # a part shorter than this is not kept (a secret that short is hidden whole)
GAP = 3  # parts separated by fewer equal characters are also kept as one (``p%40ss``)
LONGEST = 16384  # a longer part is not kept (a whole file: its diff is hidden instead)
_MATCHED = 512  # longer middles are compared a line at a time (the matcher is quadratic)
_PARTS: dict[tuple[str, str], list[str]] = {}  # each pair of renderings compared once
_DIGITS = "0123456789"
_PRIVATE = 0xE000  # Unicode's private use area: no policy text holds these characters
_SHIFTED: dict[tuple[str, bool], str] = {}


def shifted(text: str, keep_classes: bool = False) -> str:
    """``text`` with every character changed, its length kept: into characters of the
    private use area (no literal text of a template has them, so nothing lines up by
    chance), or, with ``keep_classes`` (for a template that needs letters or digits,
    ``int``), letters rotated by 13, digits by 5, anything else made ``x`` or ``y``."""
    key = (text, keep_classes)
    found = _SHIFTED.get(key)
    if found is not None:
        return found
    if not keep_classes:
        found = "".join(chr(_PRIVATE + ord(char) % 0x1900) for char in text)
    else:
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
        found = "".join(out)
    if len(_SHIFTED) > 65536:
        _SHIFTED.clear()
    _SHIFTED[key] = found
    return found


def shift_scope(
    scope: Mapping[str, Any],
    secrets: Sequence[str],
    memo: dict[Any, tuple[Any, Any]],
    keep_classes: bool = False,
) -> dict[str, Any]:
    """A copy of ``scope`` with every occurrence of each of ``secrets`` (longest first)
    in a string, a list or a dict :func:`shifted`. ``memo``: what strings (by value),
    lists and dicts (by identity) became, for the same ``secrets`` and flavour (a
    scope's variables are shared by every entry: each is looked at once per load); a
    container with nothing to shift is itself. Other mappings (``facts``, read on
    first use) are left as they are."""
    ordered = sorted((h for h in secrets if h), key=len, reverse=True)
    return {name: _shift(value, ordered, memo, keep_classes) for name, value in scope.items()}


def _shift(value: Any, ordered: list[str], memo: dict[Any, tuple[Any, Any]], keep: bool) -> Any:
    if isinstance(value, str):  # by value: each text is looked at once per load
        known = memo.get(value)
        if known is not None:
            return known[1]
        text = value
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, shifted(secret, keep))
        memo[value] = (value, text)
        return text
    if not isinstance(value, (dict, list, tuple)):
        return value
    known = memo.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    result: Any
    if isinstance(value, dict):
        items = {key: _shift(item, ordered, memo, keep) for key, item in value.items()}
        same = all(items[key] is item for key, item in value.items())
        result = value if same else items
    else:
        made = [_shift(item, ordered, memo, keep) for item in value]
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
        elif SHORTEST <= len(value) <= LONGEST:
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
    key = (a, b)
    found = _PARTS.get(key)
    if found is None:
        found = _PARTS[key] = _compare(a, b)
        if len(_PARTS) > 4096:
            _PARTS.clear()
    return found


def _compare(a: str, b: str) -> list[str]:
    """The parts of ``a`` that differ from ``b``: what they share at either end left out
    first (cheap), the middle matched character by character when short, else a line at
    a time, else taken whole."""
    start, end = _shared_ends(a, b)
    mid_a, mid_b = a[start : len(a) - end], b[start : len(b) - end]
    if len(mid_a) > _MATCHED or len(mid_b) > _MATCHED:
        lines_a, lines_b = a.split("\n"), b.split("\n")
        if len(lines_a) == len(lines_b) and len(lines_a) > 1:
            return sorted(
                {part for x, y in zip(lines_a, lines_b, strict=True) for part in _parts(x, y)}
            )
        return [mid_a] if SHORTEST <= len(mid_a) <= LONGEST else []
    from difflib import SequenceMatcher

    # (tag, from, to) over all of ``a``: the shared ends are equal runs too
    runs = [("equal", 0, start)]
    matcher = SequenceMatcher(None, mid_a, mid_b, autojunk=False)
    runs += [(tag, start + i1, start + i2) for tag, i1, i2, _, _ in matcher.get_opcodes()]
    runs.append(("equal", len(a) - end, len(a)))
    spans: list[tuple[int, int]] = []
    for k, (tag, i, j) in enumerate(runs):
        if tag == "equal":  # (an insert marks where b has more: a span of no width)
            continue
        spans.append((i, j))
        # an equal run this short beside it may be the change lining up by chance
        before = runs[k - 1] if k and runs[k - 1][0] == "equal" else None
        after = runs[k + 1] if k + 1 < len(runs) and runs[k + 1][0] == "equal" else None
        wide_i = before[1] if before is not None and before[2] - before[1] < GAP else i
        wide_j = after[2] if after is not None and after[2] - after[1] < GAP else j
        spans.append((wide_i, wide_j))
    merged: list[list[int]] = []
    for i, j in sorted(spans):
        if merged and i - merged[-1][1] < GAP:
            merged[-1][1] = max(merged[-1][1], j)
        else:
            merged.append([i, j])
    kept = {a[i:j] for i, j in (*spans, *map(tuple, merged))}  # each part, and together
    return sorted(part for part in kept if SHORTEST <= len(part) <= LONGEST)


def _shared_ends(a: str, b: str) -> tuple[int, int]:
    """How many characters ``a`` and ``b`` share at their start and then at their end."""
    most = min(len(a), len(b))
    start = 0
    while start < most and a[start] == b[start]:
        start += 1
    end = 0
    while end < most - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return start, end
