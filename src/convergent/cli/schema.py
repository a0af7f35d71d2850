"""``convergent schema``: the policy format as a JSON Schema (draft 2020-12).

Generated from the same parameter types as the policy reference (each kind's Params
struct, through msgspec), with the same descriptions (the Params docstrings, read by
:func:`convergent.policy.reference.field_docs`): every kind known here, built-in and
plug-in, the ``meta`` block, the keys every entry takes (``ENTRY_KEYS``) and the
top-level keys. Editors that speak the YAML language server use it::

    # yaml-language-server: $schema=/usr/local/share/convergent/convergent.schema.json

An entry's kind is its first key, which JSON Schema cannot say; the schema says instead
that an entry has exactly one key that is a known kind, and then takes only that kind's
parameters and the entry keys. A file with a top-level ``graph:`` key is an mgmt
yamlgraph, read by another front end: the schema accepts it as it is.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import argparse

__all__ = ["DRAFT", "TOP_KEYS", "policy_schema", "schema_command"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: The top-level keys of a native policy (the native front end accepts these only).
TOP_KEYS = (
    "resources",
    "collect",
    "vars",
    "classes",
    "include",
    "bundles",
    "invocations",
    "secrets",
)

_REFS: dict[str, Any] = {
    "anyOf": [
        {"$ref": "#/$defs/ref"},
        {"type": "array", "items": {"$ref": "#/$defs/ref"}},
    ]
}
# The value of each key of ENTRY_KEYS; a key missing here gets no type (a test asks for one).
_ENTRY_VALUES: dict[str, dict[str, Any]] = {
    "require": _REFS,
    "before": _REFS,
    "notify": _REFS,
    "meta": {"$ref": "#/$defs/meta"},
    "recv": {
        "type": "object",
        "additionalProperties": {"type": "string", "pattern": r"^[^\[\]]+\[.+\]\.[^.\[\]]+$"},
    },
    "destroy": {"enum": ["remove", "keep"]},
}
# The keys of an entry the policy language reads (for_each, if, template).
_LANG_VALUES: dict[str, dict[str, Any]] = {
    "for_each": {
        "type": ["array", "object", "string"],
        "description": "make one resource per item of a list (item) or mapping (key, item)",
    },
    "if": {
        "type": "string",
        "description": "keep the entry only where this class expression holds",
    },
    "template": {
        "type": "string",
        "description": "a Jinja2 file (relative to the policy) for content",
    },
}


def _plain(text: str) -> str:
    """Reference text for an editor's tooltip: ``code`` marks become `code`."""
    return text.replace("``", "`")


def _summary(cls: type[Any]) -> str:
    """A kind's first paragraph: its module's docstring (one module per kind), or its class's."""
    doc = sys.modules[cls.__module__].__doc__ or cls.__dict__.get("__doc__") or ""
    return _plain(" ".join(inspect.cleandoc(doc).split("\n\n")[0].split()))


def _structs(hint: Any, found: dict[str, type[msgspec.Struct]]) -> None:
    """Every Struct type inside ``hint``, by the name msgspec gives its schema."""
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        if hint.__name__ in found:
            return
        found[hint.__name__] = hint
        for field in msgspec.structs.fields(hint):
            _structs(field.type, found)
        return
    for arg in typing.get_args(hint):
        _structs(arg, found)


def _describe(components: dict[str, Any], types: list[type[Any]]) -> None:
    """Put each field's reference description on its property, in place."""
    from convergent.policy.reference import field_docs

    found: dict[str, type[msgspec.Struct]] = {}
    for t in types:
        _structs(t, found)
    for name, component in components.items():
        cls = found.get(name)
        if cls is None:
            continue
        docs = field_docs(cls)
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        component["description"] = _plain(" ".join(doc.split("\n\n")[0].split()))
        for field in msgspec.structs.fields(cls):
            prop = component.get("properties", {}).get(field.encode_name)
            if prop is not None and field.name in docs:
                prop["description"] = _plain(docs[field.name])


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy, as a JSON-ready dict."""
    from convergent import __version__
    from convergent.policy.entries import ENTRY_KEYS
    from convergent.resources.base import Meta, get_kind, kinds

    classes = {kind: cls for kind in kinds() if (cls := get_kind(kind)) is not None}
    from convergent.graph.collect import Collect

    types: list[type[Any]] = [Meta, *(cls.params_type for cls in classes.values()), Collect]
    refs, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    _describe(components, types)
    entry_props: dict[str, Any] = {}
    for key in ENTRY_KEYS:
        value = dict(_ENTRY_VALUES.get(key.name, {}))
        value["description"] = _plain(f"{key.meaning} ({key.value})").replace("`", "")
        entry_props[key.name] = value
    entry_props.update(_LANG_VALUES)
    defs: dict[str, Any] = {
        "ref": {
            "type": "string",
            "pattern": r"^[^\[\]\s]+\[.+\]$",
            "description": "a resource's identity, kind[name], e.g. file[/etc/motd]",
        },
        "meta": refs[0],
    }
    for (kind, cls), ref in zip(classes.items(), refs[1:-1], strict=True):
        params = components[ref["$ref"].rsplit("/", 1)[1]]
        defs[f"kind.{kind}"] = {
            "title": kind,
            "description": _summary(cls),
            "type": "object",
            "properties": {
                kind: {
                    "type": ["string", "number", "boolean"],
                    "pattern": r"\S",
                    "description": f"the resource's name: this is {kind}[NAME]",
                },
                **params.get("properties", {}),
                **entry_props,
            },
            "required": [kind, *params.get("required", [])],
            "additionalProperties": False,
        }
    defs["entry"] = {
        "type": "object",
        "description": "one resource: '- KIND: NAME', then the kind's parameters",
        "anyOf": [{"required": [kind]} for kind in classes],
        "allOf": [
            {"if": _names(kind, classes), "then": {"$ref": f"#/$defs/kind.{kind}"}}
            for kind in classes
        ],
    }
    defs.update(components)
    native = {
        "type": "object",
        "properties": {
            "resources": {
                "type": "array",
                "description": "the resources of this policy, one entry each",
                "items": {"$ref": "#/$defs/entry"},
            },
            "collect": {
                "type": "array",
                "description": "exported resources of every host to add to this one's graph",
                "items": refs[-1],
            },
            "vars": {"type": "object", "description": "variables for {{ ... }} templates"},
            "classes": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "classes of this host, each defined by an expression",
            },
            "include": {
                "type": ["array", "string"],
                "items": {"type": "string"},
                "description": "more policy files (names or patterns, relative to this one)",
            },
            "bundles": {
                "type": "object",
                "description": "named groups of resources with typed parameters, used like kinds",
            },
            "invocations": {
                "type": "object",
                "description": "named runs of bundles with switches and guard rails",
            },
            "secrets": {
                "type": "string",
                "description": "a YAML file of secret variables (mode 0600, owned by the runner)",
            },
        },
        "required": ["resources"],
        "additionalProperties": False,
    }
    return {
        "$schema": DRAFT,
        "title": "convergent policy",
        "description": f"A convergent {__version__} policy (convergent doc KIND explains a kind).",
        "if": {"type": "object", "required": ["graph"]},
        "then": {"type": "object", "description": "an mgmt yamlgraph (not described here)"},
        "else": native,
        "$defs": defs,
    }


def schema_command(args: argparse.Namespace) -> int:
    """Print the schema (indented JSON) to stdout, or write it to ``--output``."""
    text = json.dumps(policy_schema(), indent=2, sort_keys=False) + "\n"
    from convergent.cli.files import emit

    return emit(text, args.output)


def _names(kind: str, classes: dict[str, Any]) -> dict[str, Any]:
    """The condition of an entry of ``kind``: its key, unless that key is a parameter of
    the entry's kind (a ``kv`` has ``value:``, which is also a kind)."""
    others = [k for k, cls in classes.items() if kind in cls.params_type.__struct_fields__]
    if not others:
        return {"required": [kind]}
    return {"required": [kind], "not": {"anyOf": [{"required": [k]} for k in others]}}
