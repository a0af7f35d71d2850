"""Classes as contexts: this host's classes and the ``if:`` of entries and bundle uses.

A host has the hard classes of its facts (:func:`convergent.host.facts.hard_classes`:
``linux``, ``debian``, ``debian_12``, ``x86_64``, ``container``, its name), the classes
``--class NAME`` gives, and the soft classes of ``classes:``, each defined by an
expression (:mod:`convergent.policy.expr`) over the others and over facts::

    classes:
      web: "hostname =~ 'web-*'"
      prod: "debian and not test"

An unknown class is false (CFEngine's rule); ``convergent check --strict`` reports every
name that neither the policy, the command line, this host nor the usual hard classes of
other hosts (an OS, a version, an architecture) define. A soft class defined through
itself is an error naming the chain. Facts are gathered only when an expression needs a
hard class or names a fact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from convergent.policy.entries import Location, mark_file
from convergent.policy.expr import ExprError, class_names, evaluate, parse
from convergent.policy.nodes import STR, describe, is_mapping, is_scalar

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.expr import Node as Tree
    from convergent.policy.include import Doc
    from convergent.policy.nodes import Values
    from convergent.policy.sitebase import SiteView

__all__ = ["Classes", "condition", "read_classes"]

# Hard classes some host has (checked by --strict besides this host's own).
_KNOWN_SHAPES = re.compile(
    r"(any|linux|container|virtual|kvm|xen|vmware|virtualbox|hyperv|docker|podman|lxc"
    r"|x86_64|i686|i386|aarch64|arm64|armv7l|armhf|ppc64le|s390x|riscv64"
    r"|debian|ubuntu|fedora|centos|rhel|rocky|almalinux|alpine|arch|suse|opensuse|sles"
    r"|amzn|raspbian|devuan|gentoo|nixos)(_\d+(_\d+)*)?"
)


class _Soft:
    __slots__ = ("at", "tree")

    def __init__(self, tree: Tree, at: tuple[Node, Values]) -> None:
        self.tree = tree
        self.at = at


class Classes:
    """The classes of this host for one load of a policy."""

    def __init__(self, site: SiteView) -> None:
        self.site = site
        self.given = frozenset(site.inputs.classes)
        self.soft: dict[str, _Soft] = {}
        self._hard: frozenset[str] | None = None
        self._known: dict[str, bool] = {}
        self._evaluating: list[str] = []
        self.trees: dict[int, Tree] = {}  # parsed if: expressions, by node

    def hard(self) -> frozenset[str]:
        if self._hard is None:
            from convergent.host.facts import hard_classes

            self._hard = hard_classes(self.site.scope["facts"])
        return self._hard

    def has(self, name: str) -> bool:
        if name in self.given:
            return True
        found = self._known.get(name)
        if found is not None:
            return found
        soft = self.soft.get(name)
        if soft is None:
            return name in self.hard()
        if name in self._evaluating:
            chain = " -> ".join([*self._evaluating[self._evaluating.index(name) :], name])
            node, values = soft.at
            values.problems.at(node, f"class '{name}' is defined through itself: {chain}")
            return False
        self._evaluating.append(name)
        try:
            node, values = soft.at
            found = self.holds(soft.tree, node, values)
        finally:
            self._evaluating.pop()
        self._known[name] = found
        return found

    def holds(
        self, tree: Tree, node: Node, values: Values, scope: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether ``tree`` (written at ``node``) holds; a problem is reported there.
        ``scope``: the variables its comparisons see (the policy's, by default)."""
        inner = self.site.scope if scope is None else scope

        def value_of(dotted: str, offset: int) -> Any:
            return self._value(dotted, offset, inner)

        try:
            return evaluate(tree, self.has, value_of)
        except ExprError as exc:
            values.problems.at(_at(node, exc.offset, values), exc.message)
            return False

    def _value(self, dotted: str, offset: int, scope: Mapping[str, Any]) -> Any:
        from convergent.host.facts import FACT_NAMES

        parts = dotted.split(".")
        facts = scope["facts"]
        if parts[0] == "facts":
            value, parts = facts, parts[1:]
        elif parts[0] in FACT_NAMES:
            value = facts
        elif parts[0] in scope:
            value = scope
        else:
            raise ExprError(
                f"'{parts[0]}' is neither a fact (convergent facts lists them) nor a variable",
                offset,
            )
        done: list[str] = []
        for part in parts:
            if not hasattr(value, "__getitem__") or part not in value:
                raise ExprError(f"'{'.'.join([*done, part])}' is not defined", offset)
            value = value[part]
            done.append(part)
        return value

    def check_names(self, tree: Tree, node: Node, values: Values) -> None:
        """Under ``--strict``: report every class name nothing defines."""
        if not self.site.inputs.strict:
            return
        for name, offset in class_names(tree):
            if name in self.given or name in self.soft or name in self.hard():
                continue
            if _KNOWN_SHAPES.fullmatch(name):
                continue
            values.problems.at(
                _at(node, offset, values),
                f"unknown class '{name}': nothing defines it, so it is false here; define "
                "it under classes:, give it with --class, or check its spelling",
            )


def _at(node: Node, offset: int, values: Values) -> Location:
    """Where character ``offset`` of the expression written at ``node`` is."""
    mark = node.start_mark
    quoted = 1 if getattr(node, "style", None) in ("'", '"') else 0
    file = mark_file(mark, values.problems.filename)
    return Location(file, mark.line + 1, mark.column + 1 + quoted + offset)


def _parsed(node: Node, values: Values, what: str) -> Tree | None:
    if not is_scalar(node) or node.tag != STR or not node.value.strip():
        values.problems.at(
            node, f'{what}: expected an expression like "debian and not test", got {describe(node)}'
        )
        return None
    try:
        return parse(values.text(node))
    except ExprError as exc:
        values.problems.at(_at(node, exc.offset, values), f"{what}: {exc.message}")
        return None


def read_classes(site: SiteView, docs: list[Doc]) -> Classes:
    """The ``classes:`` of every file of the policy, parsed."""
    classes = Classes(site)
    for doc in docs:
        found = doc.keys.get("classes")
        if found is None:
            continue
        values = doc.values
        if not is_mapping(found[1]):
            values.problems.at(
                found[1],
                f"classes: expected a mapping of names to expressions, got {describe(found[1])}",
            )
            continue
        for name, name_node, expr_node in values.pairs(found[1]):
            if not name.isidentifier() or name in ("and", "or", "not"):
                values.problems.at(name_node, f"classes: '{name}' is not a class name (a word)")
                continue
            if name in classes.soft:
                values.problems.at(name_node, f"classes: '{name}' is defined twice")
                continue
            tree = _parsed(expr_node, values, f"classes: {name}")
            if tree is not None:
                classes.soft[name] = _Soft(tree, (expr_node, values))
    for soft in classes.soft.values():
        classes.check_names(soft.tree, *soft.at)
    return classes


def condition(
    site: SiteView, node: Node, values: Values, scope: Mapping[str, Any] | None = None
) -> bool:
    """Whether the ``if:`` at ``node`` holds (a problem is reported, and it does not).
    ``scope``: the variables its comparisons see (in a bundle, its parameters; in a
    ``for_each`` entry, ``item`` and ``key``)."""
    classes: Classes = site.classes
    key = id(node)
    tree = classes.trees.get(key)
    if tree is None:
        tree = _parsed(node, values, "if")
        if tree is None:
            return False
        classes.trees[key] = tree
        classes.check_names(tree, node, values)
    return classes.holds(tree, node, values, scope)
