"""Loads a YAML policy into a graph of resources, or explains everything wrong with it.

Two formats are read: convergent's own (a top-level ``resources:`` list, see
:mod:`convergent.policy.native`) and mgmt's yamlgraph (a top-level ``graph:`` key, see
:mod:`convergent.policy.mgmt`). The YAML is composed into nodes with libyaml, so every
problem is reported at ``file:line:column``; all problems of a file are raised together
in one :class:`~convergent.errors.PolicyError`. Plain policies (flat entries, one
``key: value`` a line) are read by a faster front end first, :mod:`convergent.policy.fast`,
which feeds the same builder without PyYAML and hands anything else over to this path.
Loading only reads: nothing on the host is looked at or changed. A policy is at most
:data:`MAX_POLICY_BYTES` long (checked before it is read), so no input can exhaust memory.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from convergent.errors import PolicyError, Problem
from convergent.graph.core import Graph
from convergent.policy.entries import MAX_EXPANDED_NODES, MAX_POLICY_BYTES
from convergent.resources.base import Resource

if TYPE_CHECKING:
    from pathlib import Path

    from yaml.nodes import MappingNode, Node

    from convergent.policy.cache import PolicyCache
    from convergent.policy.entries import Problems
    from convergent.policy.vars import Inputs

__all__ = ["MAX_POLICY_BYTES", "load_policy", "load_policy_text"]


_EMPTY = (
    "the policy is empty; list resources under 'resources:', e.g.\n"
    '  resources:\n    - file: /etc/motd\n      content: "hello\\n"\n'
    "or write 'resources: []' for a policy that manages nothing"
)


def load_policy(
    path: str | Path,
    *,
    max_bytes: int = MAX_POLICY_BYTES,
    inputs: Inputs | None = None,
    cache: PolicyCache | None = None,
) -> Graph[Resource[Any]]:
    """Load and validate a policy file; raise PolicyError listing every problem.

    ``inputs``: what the command line gives the policy (``--set``, ``--class``...).
    ``cache``: where a plain policy's graph is kept between runs (without ``inputs``
    only): the graph kept for these bytes, if any, else the one read, kept.

    A file longer than ``max_bytes`` is refused before it is read (a pipe or a file that
    grows while read, as soon as it has gone past the limit).
    """
    p = _shown(path)
    # Opened without blocking, so that a FIFO with no writer cannot hang the load (it
    # reads as empty); reads block again, as a pipe that has a writer needs.
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        os.set_blocking(fd, True)
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise PolicyError([_too_large(p, size, max_bytes)])
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PolicyError([_too_large(p, len(data), max_bytes, grew=True)])
    if cache is not None and not inputs:  # inputs take the language's path
        kept = cache.lookup(p, data)
        if kept is not None:
            return kept
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise PolicyError(
            [Problem(p, line, column, "not UTF-8 text; save the policy as UTF-8")]
        ) from None
    del data  # not held through the load (the policy's size again)
    return load_policy_text(text, p, inputs=inputs, cache=cache)


def _too_large(
    file: str, size: int, limit: int, *, grew: bool = False, unit: str = "bytes"
) -> Problem:
    what = f"more than {limit:,} {unit}" if grew else f"{size:,} {unit}"
    return Problem(
        file,
        1,
        1,
        f"the policy is {what}, over the limit of {limit:,} {unit}{_mib(limit)}; "
        "split it into smaller policies, or move large contents into files that "
        "'source:' copies",
    )


def _mib(size: int) -> str:
    """`` (16 MiB)`` for a whole number of MiB."""
    mib, rest = divmod(size, 1024 * 1024)
    return f" ({mib} MiB)" if mib and not rest else ""


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


def load_policy_text(
    text: str,
    filename: str = "<policy>",
    *,
    max_bytes: int = MAX_POLICY_BYTES,
    inputs: Inputs | None = None,
    cache: PolicyCache | None = None,
) -> Graph[Resource[Any]]:
    """Load a policy from ``text`` (``filename`` is used in messages only).

    Text longer than ``max_bytes`` characters is refused, as :func:`load_policy` refuses
    such a file. ``cache``: told of a graph the fast reader made (:func:`load_policy`).
    """
    if len(text) > max_bytes:
        raise PolicyError([_too_large(filename, len(text), max_bytes, unit="characters")])
    from convergent.policy.fast import load_plain

    graph = None
    if inputs is None or not inputs:
        graph = load_plain(text, filename)  # the plainest policies, without YAML; None: others
        if graph is not None and cache is not None:
            cache.remember(graph)
    return graph if graph is not None else _load_yaml(text, filename, inputs)


def _load_yaml(text: str, filename: str, inputs: Inputs | None = None) -> Graph[Resource[Any]]:
    """The full path: libyaml nodes, every problem located (see the module docstring)."""
    from convergent.policy.build import build
    from convergent.policy.entries import Problems
    from convergent.policy.nodes import (
        Values,
        describe,
        is_mapping,
        is_scalar,
        mask_flow_refs,
    )

    problems = Problems(filename)
    masked = mask_flow_refs(text)
    root = _compose(masked if masked is not None else text, problems, not _may_filter(text))
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

        entries, links, collect = read_mgmt(root, values)
    else:
        if inputs or _uses_language(root, text):
            return _load_site(root, values, inputs)
        from convergent.policy.native import read_native

        entries, links, collect = read_native(root, values)
    graph = build(entries, links, problems, collect)
    if graph is None:
        raise PolicyError(problems.sorted())
    if inputs is not None and inputs.secret_sets:  # no template uses them: hidden still
        graph.secrets = frozenset(value for value in inputs.secret_sets.values() if value)
    return graph


_LANG_TOP_KEYS = frozenset(("vars", "classes", "include", "bundles", "invocations", "secrets"))
_LANG_ENTRY_KEY: Any = None  # compiled on first use


def _uses_language(root: MappingNode, text: str) -> bool:
    """Whether a policy needs the language's reader (:mod:`convergent.policy.lang`): a
    language key at the top, a template in a string, or a language key in an entry.
    Decided here, so that a plain policy never imports the language's modules."""
    for key_node, _ in root.value:
        if getattr(key_node, "value", None) in _LANG_TOP_KEYS:
            return True
    if "{{" in text or "{%" in text or "{#" in text:
        return True
    return _uses_entry_keys(text)


def _load_site(root: MappingNode, values: Any, inputs: Inputs | None) -> Graph[Resource[Any]]:
    """The language's path: vars, templates, bundles... (:mod:`convergent.policy.lang`)."""
    from convergent.policy.build import build
    from convergent.policy.lang import read_site
    from convergent.policy.native import read_entry
    from convergent.policy.vars import Inputs

    problems = values.problems
    read = read_site(root, values, inputs if inputs is not None else Inputs(), read_entry)
    graph = build(read.entries, read.links, problems, read.collect)
    if graph is None or problems:
        raise PolicyError(_hidden(problems.sorted(), read.secrets))
    graph.clusters = read.clusters
    graph.secrets = read.secrets
    graph.held = read.held
    return graph


def _hidden(found: list[Problem], secrets: frozenset[str]) -> list[Problem]:
    """``found`` with every secret value in a message or a name replaced by ``<secret>``
    (a template's error may quote the value it failed on); where one was cut short
    (``...``), as many characters before the cut as the longest secret has, less one,
    go too, whatever they are."""
    if not secrets:
        return found
    quoted = {repr(value)[1:-1] for value in secrets}  # as a message quotes it with repr()
    stripped = {value.strip() for value in secrets if value.strip()}
    ordered = sorted(secrets | quoted | stripped, key=len, reverse=True)
    width = len(ordered[0]) - 1

    def hide(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "<secret>")
        if text.endswith("..."):  # cut short (entries._clip): its end may begin a secret
            text = text[: max(0, len(text) - 3 - width)] + "..."
        return text

    return [
        Problem(p.file, p.line, p.column, hide(p.message), p.resource and hide(p.resource))
        for p in found
    ]


def _may_filter(text: str) -> bool:
    """Whether ``text`` may use the language, whose ``if:`` and classes may leave out
    entries written: then its entries are counted as they are made, not as they are read.
    Decided on the text, before it is composed (``_uses_language`` decides on the nodes)."""
    global _LANG_TOP_KEY
    if "{{" in text or "{%" in text or "{#" in text:
        return True
    if _LANG_TOP_KEY is None:
        import re

        keys = "|".join(sorted(_LANG_TOP_KEYS))
        _LANG_TOP_KEY = re.compile(rf"^[\"']?(?:{keys})[\"']?[ \t]*:", re.MULTILINE)
    return _LANG_TOP_KEY.search(text) is not None or _uses_entry_keys(text)


_LANG_TOP_KEY: Any = None  # compiled on first use


def _uses_entry_keys(text: str) -> bool:
    global _LANG_ENTRY_KEY
    if _LANG_ENTRY_KEY is None:
        import re

        _LANG_ENTRY_KEY = re.compile(
            r"^[ \t]*(?:-[ \t]+)?(?:for_each|if|template)[ \t]*:", re.MULTILINE
        )
    return _LANG_ENTRY_KEY.search(text) is not None


def _compose(text: str, problems: Problems, entries: bool = True) -> Node | None:
    """The YAML document's root node (None for an empty document), or a problem.
    ``entries``: count the top-level ``resources:`` list as it is read."""
    import yaml

    from convergent.policy.nodes import (
        TooManyResources,
        TooManyValues,
        compose,
        entry_problem,
        expanded_size,
        unmask,
    )

    try:
        node = compose(text, entries=entries)
    except TooManyValues as exc:
        problems.add(1, 1, str(exc))
        return None
    except TooManyResources as exc:
        where, rid = entry_problem(exc.entry)
        problems.at(where, str(exc), rid)
        return None
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
    if node is not None:
        written, expanded = expanded_size(node)
        if expanded > max(MAX_EXPANDED_NODES, 4 * written):
            problems.add(
                1,
                1,
                f"aliases ('*name') make this policy stand for {expanded:,} values, from "
                f"{written:,} written (the limit is {MAX_EXPANDED_NODES:,}, or four times "
                "the values written); write the repeated parts out, or use fewer aliases",
            )
            return None
    return node


def _line(text: str, index: int) -> str:
    """Line ``index`` (0-based) of ``text``, found without splitting all of it."""
    start = 0
    for _ in range(index):
        start = text.find("\n", start) + 1
        if not start:
            return ""
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def _yaml_hint(exc: Any, text: str) -> str:
    """How to fix the most common YAML mistakes."""
    problem = exc.problem or ""
    context = exc.context or ""
    mark = exc.problem_mark
    if mark is not None:
        line = _line(text, mark.line)
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
