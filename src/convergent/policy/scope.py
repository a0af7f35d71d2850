"""The scope templates are rendered in: the policy's variables (in the order of
precedence :mod:`convergent.policy.vars` documents), its secrets, and ``facts``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from convergent.policy.nodes import describe, is_mapping, is_scalar

if TYPE_CHECKING:
    from convergent.policy.include import Doc
    from convergent.policy.sitebase import SiteView

__all__ = ["make_scope"]

_RESERVED = ("facts", "item", "key", "name", "classes")


def make_scope(site: SiteView, docs: list[Doc]) -> None:
    """Fill ``site.scope`` and ``site.secrets`` from the policy's files and its inputs."""
    from convergent.policy.vars import VarsError, read_secrets_file, read_vars_file

    problems = site.problems
    scope: dict[str, Any] = {}
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
    inputs = site.inputs
    for path in inputs.vars_files:
        try:
            scope.update(read_vars_file(path))
        except VarsError as exc:
            problems.add(1, 1, str(exc))
    scope.update(inputs.sets)
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
    site.secrets = {value for value in secrets.values() if value}
    facts = inputs.facts
    if facts is None:
        from convergent.host.facts import Facts

        facts = Facts()
    scope["facts"] = facts
    site.scope = scope
