"""``bundles:``: named, parameterised groups of resources, used like a kind.

::

    bundles:
      webserver:
        params:
          port: {type: int, default: 80}
          root: {type: str}              # no default: every use gives it
        resources:
          - file: "/etc/site-{{ name }}.conf"
            content: "port={{ port }}\\n"
    resources:
      - webserver: main                  # a use: webserver[main]
        root: /srv/main
        require: pkg[nginx]

Inside a bundle its parameters and ``name`` (the name of the use) are template
variables, besides the policy's vars and ``facts``. A use is a unit in the graph: another
entry's ``require``/``before``/``notify`` of ``webserver[main]`` reaches every resource
the use made, and the use's own ``require``/``before``/``notify`` apply to each of them.
The resources of each use are ``Graph.clusters["webserver[main]"]``. A use may carry
``if:`` and ``for_each:`` like any entry; a use its ``if:`` leaves out is an empty unit
(references to it resolve, to nothing), so one policy serves hosts with and without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convergent.graph.identity import format_id
from convergent.policy.entries import EDGE_KEYS, Link, edge
from convergent.policy.nodes import Values, describe, is_list, is_mapping, is_scalar
from convergent.policy.suggest import close_match
from convergent.resources.base import get_kind

if TYPE_CHECKING:
    from yaml.nodes import Node

    from convergent.policy.include import Doc
    from convergent.policy.sitebase import SiteView

__all__ = ["PARAM_TYPES", "Bundle", "Param", "read_bundles", "use_bundle"]

#: A parameter's ``type`` -> the Python types its value may have.
PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "map": (dict,),
    "any": (object,),
}
_MISSING: Any = object()
#: Bundles used inside bundles, at most this deep.
MAX_DEPTH = 16


class Param:
    """One parameter of a bundle: its type and default (``_MISSING``: required)."""

    __slots__ = ("default", "type")

    def __init__(self, type_name: str, default: Any) -> None:
        self.type = type_name
        self.default = default


class Bundle:
    """A bundle as defined: its parameters and its ``resources:`` list node."""

    __slots__ = ("name", "params", "resources", "values")

    def __init__(self, name: str, params: dict[str, Param], resources: Node, values: Values):
        self.name = name
        self.params = params
        self.resources = resources
        self.values = values


def _a(type_name: str) -> str:
    return f"an {type_name}" if type_name[0] in "aeiou" else f"a {type_name}"


def _fits(value: Any, type_name: str) -> bool:
    if type_name in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, PARAM_TYPES[type_name])


def read_bundles(site: SiteView, docs: list[Doc]) -> None:
    """Every ``bundles:`` definition of the policy's files into ``site.bundles``."""
    problems = site.problems
    where: dict[str, Node] = {}
    for doc in docs:
        found = doc.keys.get("bundles")
        if found is None:
            continue
        values = doc.values
        if not is_mapping(found[1]):
            problems.at(
                found[1], f"bundles: expected a mapping of bundle names, got {describe(found[1])}"
            )
            continue
        for name, name_node, body in values.pairs(found[1]):
            if get_kind(name) is not None or name in ("world",):
                problems.at(name_node, f"bundle '{name}' has the name of a kind; rename it")
                continue
            if not name.replace("-", "_").isidentifier():
                problems.at(
                    name_node,
                    f"bundle '{name}': a bundle's name is a word (letters, digits, _ and -)",
                )
                continue
            if name in where:
                first = where[name].start_mark
                problems.at(
                    name_node,
                    f"bundle '{name}' is defined twice (first at line {first.line + 1}); "
                    "rename one",
                )
                continue
            where[name] = name_node
            bundle = _bundle(name, name_node, body, values)
            if bundle is not None:
                site.bundles[name] = bundle


def _bundle(name: str, at: Node, body: Node, values: Values) -> Bundle | None:
    problems = values.problems
    if not is_mapping(body):
        problems.at(
            body,
            f"bundle '{name}': expected a mapping with params: and resources:, "
            f"got {describe(body)}",
        )
        return None
    params: dict[str, Param] = {}
    resources: Node | None = None
    for key, key_node, value in values.pairs(body):
        if key == "resources":
            resources = value
        elif key == "params":
            if not is_mapping(value):
                problems.at(
                    value, f"bundle '{name}': params: expected a mapping, got {describe(value)}"
                )
                continue
            for pname, pname_node, spec in values.pairs(value):
                param = _param(name, pname, pname_node, spec, values)
                if param is not None:
                    params[pname] = param
        else:
            problems.at(
                key_node,
                f"bundle '{name}': unknown key '{key}'; a bundle has params: and resources:",
            )
    if resources is None or not is_list(resources):
        problems.at(resources or at, f"bundle '{name}': give its resources: as a list of entries")
        return None
    return Bundle(name, params, resources, values)


def _param(bundle: str, name: str, at: Node, spec: Node, values: Values) -> Param | None:
    problems = values.problems
    if not name.isidentifier() or name in (
        "name",
        "facts",
        "item",
        "key",
        "if",
        "for_each",
        *EDGE_KEYS,
    ):
        problems.at(at, f"bundle '{bundle}': '{name}' cannot be a parameter's name")
        return None
    if not is_mapping(spec):
        problems.at(
            spec,
            f"bundle '{bundle}': parameter '{name}': write {{type: T, default: V}}, "
            f"T one of {', '.join(PARAM_TYPES)}",
        )
        return None
    type_name = "any"
    default = _MISSING
    for key, key_node, value in values.pairs(spec):
        if key == "type":
            type_name = values.text(value) if is_scalar(value) else ""
            if type_name not in PARAM_TYPES:
                problems.at(
                    value,
                    f"bundle '{bundle}': parameter '{name}': "
                    f"type is one of {', '.join(PARAM_TYPES)}",
                )
                return None
        elif key == "default":
            default = values.value(value)
        else:
            problems.at(
                key_node,
                f"bundle '{bundle}': parameter '{name}': unknown key '{key}'; "
                "a parameter has type: and default:",
            )
    if default is not _MISSING and not _fits(default, type_name):
        problems.at(
            spec, f"bundle '{bundle}': parameter '{name}': the default is not {_a(type_name)}"
        )
        return None
    return Param(type_name, default)


def use_links(key: str, refs: list[tuple[str, Any]], use_id: str, use_at: Any) -> list[Link]:
    """The links a bundle use's own ``require``/``before``/``notify`` write."""
    out: list[Link] = []
    for ref, ref_at in refs:
        source, target, notify = edge(key, (use_id, use_at), (ref, ref_at))
        out.append(Link(*source, *target, notify, key, use_id))
    return out


def use_bundle(
    site: SiteView,
    bundle: Bundle,
    pairs: list[tuple[Node, Node]],
    values: Values,
    scope: dict[str, Any],
    clusters: tuple[str, ...],
    depth: int,
) -> None:
    """Expand one use of ``bundle`` (``pairs``: its keys, the first one its name)."""
    from convergent.policy.native import _refs

    problems = site.problems
    kind_node, name_node = pairs[0]
    site.last_shows = False
    name_node = site.render(name_node, scope)
    if site.last_shows:
        problems.at(
            name_node,
            f"the name of this use of bundle '{bundle.name}' holds a secret, and a name is "
            "shown in every report, log and graph; name it without it (its parameters may "
            "hold it)",
        )
        return
    if not is_scalar(name_node) or not str(name_node.value).strip():
        problems.at(
            name_node,
            f"the use of bundle '{bundle.name}' needs a name: write '- {bundle.name}: NAME'",
        )
        return
    name = values.text(name_node)
    use_id = format_id(bundle.name, name)
    if depth >= MAX_DEPTH or use_id in clusters:
        problems.at(
            kind_node,
            f"bundle uses nest too deep ({' -> '.join([*clusters, use_id])}); "
            "a bundle cannot use itself",
            use_id,
        )
        return
    if use_id in site.uses:
        first = site.uses[use_id].start_mark
        problems.at(
            name_node,
            f"{use_id} is used twice (first at line {first.line + 1}); give each use its own name",
            use_id,
        )
        return
    given: dict[str, Any] = {}
    use_at = values.at(name_node)
    for key_node, value_node in pairs[1:]:
        key = key_node.value
        if key in EDGE_KEYS:
            refs = _refs(key, site.render(value_node, scope), values, use_id)
            site.links.extend(use_links(key, refs, use_id, use_at))
            continue
        param = bundle.params.get(key)
        if param is None:
            known = ", ".join(bundle.params) or "none"
            problems.at(
                key_node,
                f"bundle '{bundle.name}' has no parameter '{key}'"
                f"{close_match(key, list(bundle.params))}; its parameters: {known}",
                use_id,
            )
            continue
        site.last_shows = False
        value = values.value(site.render(value_node, scope), use_id)
        if param.type == "str" and isinstance(value, (int, float)):
            value = str(value)  # as Jinja2 writes it (a bool is an int too)
        if not _fits(value, param.type):
            problems.at(
                value_node, f"{key}: expected {_a(param.type)}, got {describe(value_node)}", use_id
            )
            continue
        given[key] = value
        if is_scalar(value_node):  # its second rendering stands for it (Site.shifted_as)
            site.shifted_as(key, value)
    inner = dict(site.scope)
    for key, param in bundle.params.items():
        if key in given:
            inner[key] = given[key]
        elif param.default is not _MISSING:
            inner[key] = param.default
        else:
            problems.at(name_node, f"missing parameter '{key}' of bundle '{bundle.name}'", use_id)
            return
    inner["name"] = name
    site.uses[use_id] = name_node
    for item in bundle.resources.value:
        site.expand(item, bundle.values, inner, (*clusters, use_id), depth + 1)
