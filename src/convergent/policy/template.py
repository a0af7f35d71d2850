"""Template expressions ``{{ ... }}`` in a policy's strings, and ``template:`` files.

A string that holds ``{{``, ``{%`` or ``{#`` is a Jinja2 template, rendered with Jinja2's
sandboxed environment and ``StrictUndefined``: a name nobody defined is an error, never an
empty string in a file. A string that is one expression and nothing else
(``for_each: "{{ users }}"``, ``port: "{{ port }}"``) takes the expression's value as it
is (a list, a number), not its text.

Jinja2 costs ~40 ms of import, so the commonest templates are rendered without it: a
string (or a ``template:`` file) whose expressions are all plain names (``{{ name }}``,
``{{ facts.hostname }}``, ``{{ user.home }}``, each part a key of a mapping) is filled in
here, with the same result Jinja2 gives. Anything else (a filter, a test, a statement,
an index) imports Jinja2.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "MAX_LOAD_ITEMS",
    "MAX_LOAD_TEXT",
    "TemplateError",
    "has_template",
    "render",
    "render_file",
    "weigh",
]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_EXPR = re.compile(r"\{\{\s*(" + _NAME + r"(?:\." + _NAME + r")*)\s*\}\}")
_WHOLE = re.compile(r"\{\{\s*(.+?)\s*\}\}", re.DOTALL)
_MARKS = ("{{", "{%", "{#")
_MISSING = object()
_LITERAL = "to write {{ as it is, put the text between {% raw %} and {% endraw %}"


class TemplateError(Exception):
    """A template could not be rendered. ``line``: the line of the template (1-based) it
    failed at, when known; ``file``: the template file, for a ``template:``."""

    def __init__(self, message: str, line: int | None = None, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.file = file


def has_template(text: str) -> bool:
    """Whether ``text`` holds template syntax."""
    return "{" in text and any(mark in text for mark in _MARKS)


def _undefined(name: str) -> str:
    return (
        f"'{name}' is undefined; define it under 'vars:', give it with --set {name}=VALUE, "
        "or check its spelling"
    )


def _lookup(path: str, scope: Mapping[str, Any]) -> Any:
    """The value of the dotted name ``path`` (every part a mapping key), or _MISSING
    when only Jinja2 can say (an attribute, a method)."""
    first, *rest = path.split(".")
    if first not in scope:
        raise TemplateError(_undefined(first))
    value = scope[first]
    done = first
    for part in rest:
        if not isinstance(value, Mapping) or part not in value:
            if isinstance(value, Mapping) and not hasattr(dict, part):
                raise TemplateError(f"'{done}' has no key '{part}'; it has: {_keys(value)}")
            return _MISSING
        value = value[part]
        done += "." + part
    return value


def _keys(value: Mapping[str, Any]) -> str:
    keys = sorted(str(k) for k in value)
    return ", ".join(keys[:20]) + (", ..." if len(keys) > 20 else "") if keys else "none"


def _text(value: Any) -> str:
    """What Jinja2 writes for a value: ``str()``, as Python spells it."""
    return value if isinstance(value, str) else str(value)


# text -> how to render it without Jinja2: ("whole", path) for a lone plain name, or
# ("join", pieces) with every other piece a dotted path; None: only Jinja2 can.
_PLANS: dict[str, tuple[str, Any] | None] = {}


def _plan(text: str) -> tuple[str, Any] | None:
    if "{%" in text or "{#" in text or _leftover(text):
        return None
    whole = _EXPR.fullmatch(text)
    if whole is not None:
        return ("whole", whole.group(1))
    pieces: list[str] = []
    last = 0
    for match in _EXPR.finditer(text):
        pieces += (text[last : match.start()], match.group(1))
        last = match.end()
    pieces.append(text[last:])
    return ("join", tuple(pieces))


def render(text: str, scope: Mapping[str, Any]) -> Any:
    """``text`` rendered in ``scope``: a string, or the value of a lone expression.

    Raises TemplateError (``line``: the line within ``text``).
    """
    try:
        plan = _PLANS[text]
    except KeyError:
        plan = _PLANS[text] = _plan(text) if len(_PLANS) < 100_000 else None
    if plan is not None:
        how, what = plan
        if how == "whole":
            value = _lookup(what, scope)
            if value is not _MISSING:
                return value
        else:
            out = list(what)
            for i in range(1, len(out), 2):
                value = _lookup(out[i], scope)
                if value is _MISSING:
                    break
                out[i] = value if isinstance(value, str) else str(value)
            else:
                return "".join(out)
    return _jinja(text, scope)


def _leftover(text: str) -> bool:
    """Whether ``text`` holds an expression that is not a plain name."""
    return _EXPR.sub("", text).find("{{") >= 0


_ENV: Any = None


#: The longest text ``*`` may make (a list: ``MAX_ITEMS``), and the largest number ``**``
#: may, in a template: a policy cannot ask for gigabytes with one expression.
MAX_PRODUCT = 16 * 1024 * 1024
# A list's items: ~40 bytes each (a text's characters take one), and a list longer than
# MAX_RESOURCES has no use in a policy (a for_each over it would be refused).
MAX_ITEMS = 256 * 1024
#: The most characters one template renders: a loop of products stops there.
MAX_RENDERED = 64 * 1024 * 1024
#: What all the templates of one load may render together: characters, and the items of
#: the lists and mappings lone expressions give (each becomes a node, ~400 bytes).
MAX_LOAD_TEXT = 256 * 1024 * 1024
MAX_LOAD_ITEMS = 1024 * 1024


def _env() -> Any:
    global _ENV
    if _ENV is None:
        from jinja2 import StrictUndefined
        from jinja2.compiler import CodeGenerator, optimizeconst
        from jinja2.exceptions import SecurityError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class _Codegen(CodeGenerator):
            """``~`` through the environment's bounded join: Jinja2's own ``str_join`` is
            one the sandbox does not see (a loop appending to a ``namespace()`` grew
            without bound)."""

            @optimizeconst
            def visit_Concat(self, node: Any, frame: Any) -> None:
                self.write("environment.tilde((")
                for arg in node.nodes:
                    self.visit(arg, frame)
                    self.write(", ")
                self.write("))")

        class _Bounded(ImmutableSandboxedEnvironment):
            intercepted_binops = frozenset(("*", "**", "+"))
            code_generator_class = _Codegen

            @staticmethod
            def tilde(parts: Any) -> str:
                """``a ~ b``: the parts as text, at most :data:`MAX_PRODUCT` characters."""
                texts = [str(part) for part in parts]
                if sum(len(text) for text in texts) > MAX_PRODUCT:
                    raise SecurityError(f"a concatenation longer than {MAX_PRODUCT:,}")
                return "".join(texts)

            @staticmethod
            def concat(parts: Any) -> str:
                """What a template or a macro renders, joined: at most
                :data:`MAX_RENDERED` characters (a macro calling itself twice doubled)."""
                return _bounded(parts)

            def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
                if operator == "+":
                    sized = isinstance(left, (str, list, tuple)) and type(left) is type(right)
                    most = MAX_PRODUCT if isinstance(left, str) else MAX_ITEMS
                    if sized and len(left) + len(right) > most:
                        raise SecurityError(f"a sum longer than {most:,}")
                elif operator == "*":
                    for seq, n in ((left, right), (right, left)):
                        most = MAX_PRODUCT if isinstance(seq, str) else MAX_ITEMS
                        sized = isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                        if sized and len(seq) * n > most:
                            raise SecurityError(f"a product longer than {most:,}")
                elif isinstance(left, int) and isinstance(right, int):
                    big = right > 64 and abs(left) > 1
                    if big:
                        raise SecurityError("a power too large")
                return super().call_binop(context, operator, left, right)

        _ENV = _Bounded(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
        _ENV.filters["join"] = _bounded_join(_ENV.filters["join"], SecurityError)
    return _ENV


def _bounded_join(join: Any, refused: type[Exception]) -> Any:
    """Jinja2's ``join`` filter, refusing before it joins more than :data:`MAX_PRODUCT`
    characters (a list of long texts joined is a product ``*`` does not see)."""
    from jinja2 import pass_eval_context

    @pass_eval_context
    def bounded(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        if isinstance(value, (list, tuple)):
            total = sum(len(item) for item in value if isinstance(item, str))
            if total + len(d) * max(0, len(value) - 1) > MAX_PRODUCT:
                raise refused(f"a join longer than {MAX_PRODUCT:,}")
        return join(eval_ctx, value, d, attribute)

    return bounded


def weigh(value: Any, most_items: int = MAX_LOAD_ITEMS) -> tuple[int, int]:
    """``(characters, items)`` a rendered value holds: its texts' lengths, and the items of
    its lists and mappings (nested lists that share an inner one count it each time: each
    becomes nodes of its own). The walk stops once past ``most_items``."""
    text = items = 0
    stack = [value]
    while stack and items <= most_items:
        found = stack.pop()
        if isinstance(found, str):
            text += len(found)
        elif isinstance(found, (list, tuple, dict)):
            items += len(found)
            stack.extend(found.values() if isinstance(found, dict) else found)
    return text, items


def _within(value: Any) -> Any:
    """A lone expression's value, refused when it holds more than :data:`MAX_ITEMS` items
    in all or more than :data:`MAX_RENDERED` characters."""
    from jinja2.exceptions import SecurityError

    text, items = weigh(value, MAX_ITEMS)
    if items > MAX_ITEMS:
        raise SecurityError(f"a value of more than {MAX_ITEMS:,} items in all")
    if text > MAX_RENDERED:
        raise SecurityError(f"a text longer than {MAX_RENDERED:,} characters")
    return value


def _jinja(text: str, scope: Mapping[str, Any]) -> Any:
    import jinja2

    env = _env()
    stripped = text.strip()
    whole = _WHOLE.fullmatch(stripped)
    try:
        if whole is not None and stripped == text and "}}" not in whole.group(1):
            value = _compiled(env, text, whole.group(1))(**scope)
            if isinstance(value, jinja2.Undefined):
                str(value)  # raises UndefinedError with the name
            return _within(value)
        return _bounded(_compiled(env, text, None).generate(**scope))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template syntax error: {exc.message}; {_LITERAL}", exc.lineno
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(_undefined_message(exc), _template_line(exc, None)) from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except Exception as exc:  # a filter's own error (an int of a word...)
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}") from None


_FROM_TEXT: dict[str, Any] = {}  # compiled templates and lone expressions, by text


def _compiled(env: Any, text: str, expression: str | None) -> Any:
    """``text`` compiled (``expression``: its lone expression), once per load and text:
    a policy with secrets renders each template twice (policy/secretforms.py)."""
    found = _FROM_TEXT.get(text)
    if found is None:
        if expression is not None:
            found = env.compile_expression(expression, undefined_to_none=False)
        else:
            found = env.from_string(text)
        if len(_FROM_TEXT) >= 4096:
            _FROM_TEXT.clear()
        _FROM_TEXT[text] = found
    return found


def _bounded(parts: Iterator[str]) -> str:
    """The parts a template generates, joined, refused once past :data:`MAX_RENDERED`."""
    from jinja2.exceptions import SecurityError

    out: list[str] = []
    size = 0
    for part in parts:
        size += len(part)
        if size > MAX_RENDERED:
            raise SecurityError(f"an output longer than {MAX_RENDERED:,} characters")
        out.append(part)
    return "".join(out)


def _undefined_message(exc: Exception) -> str:
    text = str(exc)
    found = re.fullmatch(r"'([A-Za-z_][A-Za-z0-9_]*)' is undefined", text)
    if found:
        return _undefined(found.group(1))
    return f"{text}; define it under 'vars:' or check its spelling"


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line an error was raised at (Jinja2 rewrites its traceback so that
    the template's frames carry the template's lines)."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == (filename or "<template>"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


#: Compiled template files by (path, source): a for_each renders one file many times.
_COMPILED: dict[tuple[str, str], Any] = {}
#: The largest template file read (1 MiB).
MAX_TEMPLATE_BYTES = 1024 * 1024


def render_file(path: str, scope: Mapping[str, Any], read: dict[str, str] | None = None) -> str:
    """The Jinja2 template file ``path`` rendered in ``scope``; TemplateError (with
    ``file`` and ``line``) when it cannot be read or rendered. ``read``: the files read
    so far in this load, by path (each is read once per load)."""
    source = read.get(path) if read is not None else None
    if source is None:
        source = _read_template(path)
        if read is not None:
            read[path] = source
    try:
        plan = _PLANS[source]
    except KeyError:
        plan = _PLANS[source] = _plan(source) if len(_PLANS) < 100_000 else None
    if plan is not None and plan[0] == "join":  # plain names only: no Jinja2 needed
        out = list(plan[1])
        for i in range(1, len(out), 2):
            try:
                value = _lookup(out[i], scope)
            except TemplateError as exc:
                at = list(_EXPR.finditer(source))[i // 2].start()
                raise TemplateError(exc.message, source.count("\n", 0, at) + 1, path) from None
            if value is _MISSING:
                break
            out[i] = value if isinstance(value, str) else str(value)
        else:
            return "".join(out)
    import jinja2

    env = _env()
    try:
        found = _COMPILED.get((path, source))
        if found is None:
            from jinja2 import meta

            code = env.compile(source, name=path, filename=path)
            template = env.template_class.from_code(env, code, env.make_globals(None))
            names = frozenset(meta.find_undeclared_variables(env.parse(source)))
            if len(_COMPILED) > 256:
                _COMPILED.clear()
            found = _COMPILED[(path, source)] = (template, names)
        template, names = found
        used = {name: scope[name] for name in names if name in scope}
        rendered = _bounded(template.generate(used))
    except jinja2.TemplateSyntaxError as exc:
        message = f"template syntax error: {exc.message}; {_LITERAL}"
        raise TemplateError(message, exc.lineno, path) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(_undefined_message(exc), _template_line(exc, path), path) from None
    except jinja2.exceptions.SecurityError as exc:
        line = _template_line(exc, path)
        raise TemplateError(f"not allowed in a template: {exc}", line, path) from None
    except Exception as exc:
        line = _template_line(exc, path)
        raise TemplateError(f"template failed: {type(exc).__name__}: {exc}", line, path) from None
    return rendered


def _read_template(path: str) -> str:
    import os

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise TemplateError(
            f"cannot read the template {path}: {exc.strerror or exc}; "
            "a template's path is relative to the policy file that names it"
        ) from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(
            f"the template {path} is over {MAX_TEMPLATE_BYTES:,} bytes; split it", 1, path
        )
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"the template {path} is not UTF-8 text", 1, path) from None
    return source
