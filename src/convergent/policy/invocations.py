"""``invocations:``: named runs of some of a policy's bundles, with the guard rails the
policy fixes.

::

    invocations:
      deploy-web:
        methods: [webserver]                 # the bundles it may run
        switches:                            # template variables, typed, with defaults
          port: {type: int, default: 80}
          token: {type: secret}              # no default: required
        guard:
          require_noop_first: 30m            # a --noop of the same run within 30 minutes
          max_changes: 50                    # refused when the dry run predicts more
          allowed_classes: [debian]          # the host must have one of them
          forbidden_classes: [prod]          # and none of these
          confirm: true                      # typed on a terminal

Only the policy's own file declares invocations (not its includes). Every problem is
reported at its ``file:line:col``, all of them together (:class:`PolicyError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from convergent.errors import PolicyError
from convergent.policy.entries import Location, Problems

__all__ = [
    "SWITCH_TYPES",
    "Guard",
    "Invocation",
    "Switch",
    "SwitchError",
    "parse_duration",
    "read_invocations",
    "resolve_switches",
]

SwitchType = Literal["str", "int", "float", "bool", "list", "secret"]
SWITCH_TYPES: tuple[str, ...] = ("str", "int", "float", "bool", "list", "secret")


class Switch(msgspec.Struct, frozen=True):
    """One switch: its type and default (``required`` when it has none)."""

    type: SwitchType = "str"
    default: Any = None
    required: bool = False

    @property
    def secret(self) -> bool:
        return self.type == "secret"


class Guard(msgspec.Struct, frozen=True):
    """The guard rails of an invocation; none of them can be turned off from the command line."""

    require_noop_first: float | None = None  # seconds
    max_changes: int | None = None
    allowed_classes: tuple[str, ...] = ()
    forbidden_classes: tuple[str, ...] = ()
    confirm: bool = False


class Invocation(msgspec.Struct, frozen=True):
    """A named invocation: the bundles it may run, its switches and guard rails."""

    name: str
    methods: tuple[str, ...]
    switches: dict[str, Switch]
    guard: Guard
    at: tuple[str, int, int]  # file, line, column of its name


class SwitchError(ValueError):
    """A switch on the command line that the invocation does not take, or a bad value."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: object) -> float:
    """``30m`` -> 1800.0 (s, m, h, d; a bare number is seconds). Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("a duration like 30m (s, m, h or d), not a bool")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(str(text))
        if match is None:
            raise ValueError(f"{text!r} is not a duration; write it like 90s, 30m, 2h or 1d")
        value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r}: a duration is more than 0")
    return value


def _convert(kind: str, value: Any, where: str) -> Any:
    """``value`` as a switch of type ``kind``; raises SwitchError."""
    ok = {
        "str": isinstance(value, str),
        "secret": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
    }[kind]
    if not ok:
        shown = "<secret>" if kind == "secret" else repr(value)
        raise SwitchError(f"{where}: {shown} is not a {kind}")
    return float(value) if kind == "float" else value


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _from_text(kind: str, text: str, where: str) -> Any:
    """A command-line value (``--set port=8080``) as a switch of type ``kind``."""
    if kind in ("str", "secret"):
        return text
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SwitchError(f"{where}: {text!r} is not a bool; give true or false")
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        article = "an" if kind == "int" else "a"
        raise SwitchError(f"{where}: {text!r} is not {article} {kind}") from None


def resolve_switches(invocation: Invocation, sets: Iterable[str]) -> dict[str, Any]:
    """The switches' values: their defaults, then ``NAME=VALUE`` from the command line.

    Raises SwitchError for an unknown switch (naming the valid ones), a bad value or a
    required switch not given.
    """
    values: dict[str, Any] = {
        name: switch.default for name, switch in invocation.switches.items() if not switch.required
    }
    valid = ", ".join(sorted(invocation.switches)) or "none"
    for text in sets:
        name, eq, raw = text.partition("=")
        name = name.strip()
        if not eq:
            raise SwitchError(f"--set {text!r}: write it as NAME=VALUE")
        switch = invocation.switches.get(name)
        if switch is None:
            raise SwitchError(
                f"--set {name}: invocation {invocation.name} has no switch {name!r}; "
                f"its switches: {valid}"
            )
        values[name] = _from_text(switch.type, raw, f"--set {name}")
    missing = [n for n, s in invocation.switches.items() if s.required and n not in values]
    if missing:
        raise SwitchError(
            f"invocation {invocation.name} needs {', '.join(missing)}: "
            + " ".join(f"--set {n}=VALUE" for n in missing)
        )
    return values


# -- reading ----------------------------------------------------------------------------


def read_invocations(text: str, filename: str) -> tuple[dict[str, Invocation], set[str]]:
    """The ``invocations:`` of the policy ``text`` and the names of the bundles its
    ``bundles:`` defines; raises PolicyError with every problem."""
    from convergent.policy.nodes import Values, compose, is_mapping, mask_flow_refs

    problems = Problems(filename)
    masked = mask_flow_refs(text)
    root = compose(masked if masked is not None else text, entries=False)
    values = Values(problems, masked is not None)
    found: dict[str, Invocation] = {}
    bundles: set[str] = set()
    if root is None or not is_mapping(root):
        return found, bundles
    for key, _key_node, node in values.pairs(root):
        if key == "bundles" and is_mapping(node):
            bundles.update(name for name, _, _ in values.pairs(node))
        if key != "invocations":
            continue
        if not is_mapping(node):
            problems.at(node, "invocations: is a mapping of names to invocations")
            continue
        for name, name_node, body in values.pairs(node):
            invocation = _read_one(name, name_node, body, values)
            if invocation is not None:
                found[name] = invocation
    if problems:
        raise PolicyError(problems.sorted())
    return found, bundles


_KEYS = ("methods", "switches", "guard")
_GUARD_KEYS = (
    "require_noop_first",
    "max_changes",
    "allowed_classes",
    "forbidden_classes",
    "confirm",
)


def _read_one(
    name: str,
    name_node: Any,
    body: Any,
    values: Any,
) -> Invocation | None:
    from convergent.policy.nodes import is_mapping

    problems: Problems = values.problems
    what = f"invocation {name}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        problems.at(name_node, f"{what}: a name is letters, digits, '_', '.' and '-'")
        return None
    if not is_mapping(body):
        problems.at(body, f"{what}: give methods: (and switches:, guard:) under it")
        return None
    parts = {key: (key_node, node) for key, key_node, node in values.pairs(body)}
    for key, (key_node, _) in parts.items():
        if key not in _KEYS:
            problems.at(key_node, f"{what}: unknown key {key!r}; the keys: {', '.join(_KEYS)}")
    methods = _methods(what, parts.get("methods"), body, values)
    switches = _switches(what, parts.get("switches"), values)
    guard = _guard(what, parts.get("guard"), values)
    if methods is None or switches is None or guard is None:
        return None
    at: Location = values.at(name_node)
    return Invocation(name, methods, switches, guard, (at.file, at.line, at.col))


def _methods(what: str, part: Any, body: Any, values: Any) -> tuple[str, ...] | None:
    problems: Problems = values.problems
    if part is None:
        problems.at(body, f"{what}: give methods: the bundles it may run, e.g. [webserver]")
        return None
    node = part[1]
    methods = values.value(node)
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        problems.at(node, f"{what}: methods is a list of bundle names, e.g. [webserver]")
        return None
    return tuple(methods)


def _switches(what: str, part: Any, values: Any) -> dict[str, Switch] | None:
    from convergent.policy.nodes import is_mapping

    problems: Problems = values.problems
    if part is None:
        return {}
    node = part[1]
    if not is_mapping(node):
        problems.at(node, f"{what}: switches is a mapping: NAME: {{type: int, default: 80}}")
        return None
    found: dict[str, Switch] = {}
    ok = True
    for name, name_node, spec_node in values.pairs(node):
        spec = values.value(spec_node)
        where = f"{what}: switch {name}"
        if not name.isidentifier():
            problems.at(name_node, f"{where}: a switch name is a word (letters, digits, _)")
            ok = False
            continue
        if not isinstance(spec, Mapping) or set(spec) - {"type", "default"}:
            problems.at(spec_node, f"{where}: give {{type: TYPE, default: VALUE}}")
            ok = False
            continue
        kind = spec.get("type", "str")
        if kind not in SWITCH_TYPES:
            at = next((n for k, _, n in values.pairs(spec_node) if k == "type"), spec_node)
            problems.at(at, f"{where}: type {kind!r}; give one of {', '.join(SWITCH_TYPES)}")
            ok = False
            continue
        if "default" not in spec:
            found[name] = Switch(kind, None, required=True)
            continue
        try:
            found[name] = Switch(kind, _convert(kind, spec["default"], f"{where}: default"))
        except SwitchError as exc:
            problems.at(spec_node, str(exc))
            ok = False
    return found if ok else None


def _guard(what: str, part: Any, values: Any) -> Guard | None:
    from convergent.policy.nodes import is_mapping

    problems: Problems = values.problems
    if part is None:
        return Guard()
    node = part[1]
    if not is_mapping(node):
        problems.at(node, f"{what}: guard is a mapping of guard rails ({', '.join(_GUARD_KEYS)})")
        return None
    fields: dict[str, Any] = {}
    ok = True
    for key, key_node, value_node in values.pairs(node):
        value = values.value(value_node)
        where = f"{what}: guard: {key}"
        problem = None
        if key == "require_noop_first":
            try:
                fields[key] = parse_duration(value)
            except ValueError as exc:
                problem = f"{where}: {exc}"
        elif key == "max_changes":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problem = f"{where}: a number of changes, 0 or more"
            else:
                fields[key] = value
        elif key in ("allowed_classes", "forbidden_classes"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problem = f"{where}: a list of class names"
            else:
                fields[key] = tuple(value)
        elif key == "confirm":
            if not isinstance(value, bool):
                problem = f"{where}: true or false"
            else:
                fields[key] = value
        else:
            problems.at(
                key_node,
                f"{what}: unknown guard rail {key!r}; the guard rails: {', '.join(_GUARD_KEYS)}",
            )
            ok = False
            continue
        if problem is not None:
            problems.at(value_node, problem)
            ok = False
    return Guard(**fields) if ok else None
