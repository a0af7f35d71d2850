"""Class expressions: the small language of ``if:`` and ``classes:``, parsed, never eval'd.

::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | "(" expr ")" | compare | CLASS
    compare  := operand ("==" | "!=" | "=~" | "!~") operand
    operand  := NAME("." NAME)* | 'text' | "text" | NUMBER

A bare name is a class: true when this host has it, false otherwise (an unknown class is
simply false). In a comparison a name is a fact (``hostname``, ``os.family``,
``facts.os.version_id``) or else a variable (in a bundle, its parameters and ``name``;
in a ``for_each`` entry, ``item`` and ``key``, the ``if:`` holding for each item apart);
``=~`` matches a shell pattern (``hostname =~ 'web-*'``), ``==`` compares as text.
``not`` binds tighter than ``and``, ``and`` tighter than ``or``.

:func:`parse` returns a tree of tuples; :func:`evaluate` evaluates it. A problem is an
:class:`ExprError` with its offset in the text.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

__all__ = ["ExprError", "Node", "class_names", "evaluate", "parse"]

# ("class", name, offset) | ("not", node) | ("and", a, b) | ("or", a, b)
# | ("cmp", op, operand, operand); an operand is ("name", dotted, offset) or ("lit", text)
Node = tuple[Any, ...]

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<op>==|!=|=~|!~)"
    r"|(?P<paren>[()])"
    r"|'(?P<single>[^']*)'"
    r'|"(?P<double>[^"]*)"'
    r"|(?P<number>-?\d+(?:\.\d+)?)(?![\w.])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r")"
)
_WORDS = ("and", "or", "not")
#: The longest expression read (a bound on the work one policy line can ask for).
MAX_LENGTH = 4096
_DEEPEST = 100


class ExprError(Exception):
    """A malformed expression; ``offset``: where in its text (0-based)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """``(kind, value, offset)`` of each token: op, paren, text, name, word."""
    out: list[tuple[str, str, int]] = []
    i = 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        match = _TOKEN.match(text, i)
        if match is None or match.end() == i:
            j = i + len(text[i:]) - len(text[i:].lstrip())
            raise ExprError(f"unexpected {text[j]!r}", j)
        kind = match.lastgroup or ""
        value = match.group(kind)
        start = match.start(kind) - (1 if kind in ("single", "double") else 0)
        if kind in ("single", "double", "number"):
            kind = "text"
        elif kind == "name" and value in _WORDS:
            kind = "word"
        out.append((kind, value, start))
        i = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise ExprError("the expression ends too early", len(self.text))
        self.i += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise ExprError("an empty expression; write a class name, e.g. debian", 0)
        node = self.or_()
        token = self.peek()
        if token is not None:
            raise ExprError(f"unexpected {token[1]!r}; join parts with and / or", token[2])
        return node

    def or_(self) -> Node:
        node = self.and_()
        while (token := self.peek()) is not None and token[:2] == ("word", "or"):
            self.i += 1
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while (token := self.peek()) is not None and token[:2] == ("word", "and"):
            self.i += 1
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        self.depth += 1
        if self.depth > _DEEPEST:
            raise ExprError(f"nested more than {_DEEPEST} deep", self.take()[2])
        try:
            kind, value, offset = self.take()
            if (kind, value) == ("word", "not"):
                return ("not", self.not_())
            if (kind, value) == ("paren", "("):
                node = self.or_()
                close = self.peek()
                if close is None or close[:2] != ("paren", ")"):
                    at = close[2] if close is not None else len(self.text)
                    raise ExprError("a '(' is not closed; add ')'", at)
                self.i += 1
                return node
            if kind in ("name", "text"):
                after = self.peek()
                if after is not None and after[0] == "op":
                    self.i += 1
                    right = self.take()
                    if right[0] not in ("name", "text"):
                        raise ExprError(f"expected a value after {after[1]}", right[2])
                    return ("cmp", after[1], _operand(kind, value, offset), _operand(*right))
                if kind == "text":
                    raise ExprError(
                        "a value alone is not a condition; compare it: hostname == 'web1'",
                        offset,
                    )
                if "." in value:
                    raise ExprError(
                        f"'{value}' is a fact, not a class; compare it: {value} == '...'",
                        offset,
                    )
                return ("class", value, offset)
            raise ExprError(f"unexpected {value!r}", offset)
        finally:
            self.depth -= 1


def _operand(kind: str, value: str, offset: int) -> Node:
    return ("name", value, offset) if kind == "name" else ("lit", value)


def parse(text: str) -> Node:
    """The tree of ``text``; raises ExprError."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"an expression is at most {MAX_LENGTH} characters", 0)
    return _Parser(text).parse()


def class_names(node: Node) -> list[tuple[str, int]]:
    """Every class the expression names, with its offset."""
    out: list[tuple[str, int]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if item[0] == "class":
            out.append((item[1], item[2]))
        elif item[0] == "not":
            stack.append(item[1])
        elif item[0] in ("and", "or"):
            stack.extend((item[2], item[1]))
    return out


def evaluate(
    node: Node, has_class: Callable[[str], bool], value_of: Callable[[str, int], Any]
) -> bool:
    """Whether the expression holds. ``has_class(name)``; ``value_of(dotted, offset)``
    the value a name stands for in a comparison (may raise ExprError)."""
    kind = node[0]
    if kind == "class":
        return has_class(node[1])
    if kind == "not":
        return not evaluate(node[1], has_class, value_of)
    if kind == "and":
        return evaluate(node[1], has_class, value_of) and evaluate(node[2], has_class, value_of)
    if kind == "or":
        return evaluate(node[1], has_class, value_of) or evaluate(node[2], has_class, value_of)
    op, left, right = node[1], _value(node[2], value_of), _value(node[3], value_of)
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    matched = fnmatch.fnmatchcase(left, right)
    return matched if op == "=~" else not matched


def _value(operand: Node, value_of: Callable[[str, int], Any]) -> str:
    if operand[0] == "lit":
        return str(operand[1])
    value = value_of(operand[1], operand[2])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
