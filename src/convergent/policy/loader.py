"""Loads a YAML policy into a graph of resources, or explains everything wrong with it.

Two formats are read: convergent's own (a top-level ``resources:`` list, see
:mod:`convergent.policy.native`) and mgmt's yamlgraph (a top-level ``graph:`` key, see
:mod:`convergent.policy.mgmt`). The YAML is composed into nodes with libyaml, so every
problem is reported at ``file:line:column``; all problems of a file are raised together
in one :class:`~convergent.errors.PolicyError`. Plain policies (flat entries, one
``key: value`` a line) take a fast path first, :mod:`convergent.policy.fast`, which
gives the same graph without PyYAML and hands anything else over to this path.
Loading only reads: nothing on the host is looked at or changed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from convergent.errors import PolicyError
from convergent.graph.core import Graph
from convergent.resources.base import Resource

if TYPE_CHECKING:
    from pathlib import Path

    from yaml.nodes import Node

    from convergent.policy.nodes import Problems

__all__ = ["load_policy", "load_policy_text"]

_EMPTY = (
    "the policy is empty; list resources under 'resources:', e.g.\n"
    '  resources:\n    - file: /etc/motd\n      content: "hello\\n"\n'
    "or write 'resources: []' for a policy that manages nothing"
)


def load_policy(path: str | Path) -> Graph[Resource[Any]]:
    """Load and validate a policy file; raise PolicyError listing every problem."""
    p = _shown(path)
    with open(p, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        from convergent.errors import Problem

        raise PolicyError(
            [Problem(p, line, column, "not UTF-8 text; save the policy as UTF-8")]
        ) from None
    return load_policy_text(text, p)


def _shown(path: str | Path) -> str:
    """``str(pathlib.Path(path))``, the name messages use, without importing pathlib.

    (pathlib and the urllib.parse it imports cost ~5 ms of start-up.) Empty, repeated and
    ``.`` components go; a leading ``//`` stays, as POSIX allows it a meaning.
    """
    text = os.fspath(path)
    body = text.lstrip("/")
    slashes = len(text) - len(body)
    root = "" if not slashes else "//" if slashes == 2 else "/"
    return root + "/".join(part for part in body.split("/") if part and part != ".") or "."


def load_policy_text(text: str, filename: str = "<policy>") -> Graph[Resource[Any]]:
    """Load a policy from ``text`` (``filename`` is used in messages only)."""
    from convergent.policy.fast import load_plain

    graph = load_plain(text)  # the plainest policies, without YAML; None: anything else
    return graph if graph is not None else _load_yaml(text, filename)


def _load_yaml(text: str, filename: str) -> Graph[Resource[Any]]:
    """The full path: libyaml nodes, every problem located (see the module docstring)."""
    from convergent.policy.build import build
    from convergent.policy.nodes import (
        Problems,
        Values,
        describe,
        is_mapping,
        is_scalar,
        mask_flow_refs,
    )

    problems = Problems(filename)
    masked = mask_flow_refs(text)
    root = _compose(masked if masked is not None else text, problems)
    if problems:
        raise PolicyError(problems.sorted())
    if root is None:
        problems.add(1, 1, _EMPTY)
        raise PolicyError(problems.sorted())
    if not is_mapping(root):
        problems.at(
            root,
            "the top level of a policy is a mapping with a 'resources:' list, "
            f"not {describe(root)}; e.g.\n"
            "  resources:\n    - file: /etc/motd",
        )
        raise PolicyError(problems.sorted())
    values = Values(problems, masked is not None)
    if any(is_scalar(k) and k.value == "graph" for k, _ in root.value):
        from convergent.policy.mgmt import read_mgmt

        entries, links = read_mgmt(root, values)
    else:
        from convergent.policy.native import read_native

        entries, links = read_native(root, values)
    graph = build(entries, links, problems)
    if graph is None:
        raise PolicyError(problems.sorted())
    return graph


def _compose(text: str, problems: Problems) -> Node | None:
    """The YAML document's root node (None for an empty document), or a problem."""
    import yaml

    from convergent.policy.nodes import compose, unmask

    try:
        node = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and "end of stream" in (exc.problem or ""):
            mark = exc.context_mark  # where the unclosed thing starts, not the file's end
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = " ".join(unmask(part) for part in (exc.context, exc.problem) if part)
        problems.add(line, column, f"YAML syntax error: {what}; {_yaml_hint(exc, text)}")
        return None
    except yaml.reader.ReaderError as exc:
        head = text[: exc.position]
        line = head.count("\n") + 1
        column = exc.position - (head.rfind("\n") + 1) + 1
        problems.add(
            line,
            column,
            f"character {exc.character!r} is not allowed in YAML; "
            "remove it, or write it as an escape in a double-quoted string",
        )
        return None
    except yaml.YAMLError as exc:
        problems.add(1, 1, f"YAML error: {exc}")
        return None
    return node


def _yaml_hint(exc: Any, text: str) -> str:
    """How to fix the most common YAML mistakes."""
    problem = exc.problem or ""
    context = exc.context or ""
    mark = exc.problem_mark
    if mark is not None:
        line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
        if "\t" in line[: mark.column + 1]:
            return "indent with spaces: YAML does not allow tabs"
    if "single document" in context:
        return "a policy is one YAML document: remove the second '---'"
    if "undefined alias" in problem:
        return "define the anchor ('&name') before using it ('*name')"
    if "quoted scalar" in context:
        return "close the quote"
    if "flow" in context:
        return (
            "inside [ ] or { } quote values that contain brackets, commas or colons, "
            'e.g. ["file[/a]"], or write one item per line'
        )
    if "mapping values are not allowed" in problem:
        return "quote a value that contains ': ', or check the indentation"
    return "check the indentation and quoting on this line and the one before"
