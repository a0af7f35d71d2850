"""The scope templates are rendered in: the policy's variables (in the order of
precedence :mod:`convergent.policy.vars` documents), its secrets, and ``facts``.

A variable of ``vars:`` may itself hold templates (``motd: "hi from {{ facts.hostname }}"``):
they are rendered once, in the order written, so a variable can use the facts and the
variables written before it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from convergent.policy.nodes import STR, describe, is_list, is_mapping, is_scalar
from convergent.policy.template import has_template

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.include import Doc
    from convergent.policy.nodes import Values
    from convergent.policy.sitebase import SiteView

__all__ = ["make_scope"]

_RESERVED = ("facts", "item", "key", "name", "classes")


def make_scope(site: SiteView, docs: list[Doc]) -> None:
    """Fill ``site.scope`` and ``site.secrets`` from the policy's files and its inputs."""
    from convergent.policy.vars import VarsError, read_secrets_file, read_vars_file

    problems = site.problems
    scope: dict[str, Any] = {}
    written: dict[str, tuple[Node, Values]] = {}  # the policy's own vars, by name
    for doc in docs:
        found = doc.keys.get("vars")
        if found is None:
            continue
        node = found[1]
        if not is_mapping(node):
            problems.at(node, f"vars: expected a mapping of names to values, got {describe(node)}")
            continue
        for name, name_node, value_node in doc.values.pairs(node):
            if not name.isidentifier() or name in _RESERVED:
                problems.at(
                    name_node,
                    f"vars: '{name}' cannot be a variable name; use letters, digits and _ "
                    f"(not {', '.join(_RESERVED)})",
                )
                continue
            scope[name] = doc.values.value(value_node)
            written[name] = (value_node, doc.values)
    inputs = site.inputs
    given: set[str] = set()
    for path in inputs.vars_files:
        try:
            from_file = read_vars_file(path)
            scope.update(from_file)
            given.update(from_file)
        except VarsError as exc:
            problems.add(1, 1, str(exc))
    scope.update(inputs.sets)
    given.update(inputs.sets)
    secrets: dict[str, str] = {}
    main = docs[-1]
    if "secrets" in main.keys:
        node = main.keys["secrets"][1]
        if not is_scalar(node) or not node.value:
            problems.at(node, "secrets: expected the path of a YAML file of secrets (mode 0600)")
        else:
            path = os.path.join(os.path.dirname(main.file), main.values.text(node))
            try:
                secrets.update(read_secrets_file(os.path.normpath(path)))
            except VarsError as exc:
                problems.at(node, str(exc))
    for doc in docs[:-1]:
        if "secrets" in doc.keys:
            problems.at(
                doc.keys["secrets"][0], "secrets: only the main policy names a secrets file"
            )
    secrets.update(inputs.secret_sets)
    scope.update(secrets)
    given.update(secrets)
    site.secrets = {value for value in secrets.values() if value}
    facts = inputs.facts
    if facts is None:
        from convergent.host.facts import Facts

        facts = Facts()
    scope["facts"] = facts
    site.scope = scope
    for name, (node, values) in written.items():  # vars may use facts and earlier vars
        if name not in given and _templated(node):
            site.last_shows = False
            scope[name] = values.value(site.render(node, scope))
            if is_scalar(node):  # one template made it: its second rendering stands for it
                site.shifted_as(name, scope[name])


def _templated(node: Node) -> bool:
    if is_scalar(node):
        return node.tag == STR and has_template(node.value)
    if is_list(node):
        return any(_templated(item) for item in node.value)
    if is_mapping(node):
        return any(_templated(value) for _, value in node.value)
    return False
