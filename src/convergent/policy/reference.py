"""The policy reference: every key a policy may use, and every kind's parameters.

``python -m convergent.policy.reference`` prints it as markdown. Parameter descriptions
come from each Params class docstring, where the fields are documented one per line
after a blank line::

    class FileParams(Params):
        \"\"\"Parameters of ``file``.

        path: absolute path of the file
        content: what the file holds
        \"\"\"

A line indented further continues the description above it.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Iterable
from typing import Any

import msgspec

from convergent.policy.entries import ENTRY_KEYS
from convergent.resources.base import Meta, get_kind, kinds
from convergent.resources.predicted import predicts

__all__ = ["field_docs", "render_reference"]

# Meta's docstring does not document its fields (yet); these are used until it does.
_META_DOCS = {
    "noop": "only check and report what would change; never change anything",
}

_INTRO = """\
# Policy reference

A policy is a YAML file with a top-level key `resources:`, a list of entries, and
optionally `collect:`, `vars:`, `classes:`, `include:`, `bundles:`, `secrets:` and
`invocations:` (below). The first key of an entry is the resource's kind and its
value the resource's name; together they are its identity, `kind[name]`, used in
references, logs and errors. `resources: []` is an empty policy.

```yaml
resources:
  - file: /tmp/demo/f1
    content: "i am f1\\n"
  - exec: build
    cmd: [touch, /tmp/demo/built]
    creates: /tmp/demo/built
    require: [file[/tmp/demo/f1]]
    notify: noop[done]
  - noop: done
```

A file with a top-level `graph:` key is read as an mgmt yamlgraph instead.

## Keys of every entry

| key | value | meaning |
| --- | --- | --- |
| *kind* (first key) | the name | the kind and name: `file: /etc/motd` is `file[/etc/motd]` |
{keys}

Every other key is a parameter of the kind.

`recv` also takes a value another host publishes with a `value` resource:
`param: world[HOST].NAME` (`world[*].NAME`: the list of every host's value NAME, sorted
by host). Until it exists the resource waits (and says so); `meta: {{wait_timeout: N}}`
fails it after N seconds. A value that changes checks the resource again.

## collect

`meta: {{export: true}}` publishes a resource for the other hosts (`export: [web1, web2]`:
for those only); it is applied here only if this policy collects it too. `collect:`
takes the exports of every host into this host's graph, live: a new export joins within
a second; a withdrawn one, or one whose host is gone (past its lease), leaves the graph
and is undone if it says `reverse: true`. Each entry names a kind and what other hosts
may do here:

| key | value | meaning |
| --- | --- | --- |
| `kind` | a kind | the kind of exports to take |
| `where` | a mapping | the allow-list: `kinds`, `names` (like `web-*`), `paths` (directories) |
| `pattern` | a directory | mgmt's meaning: a collected file goes there under its own base name |

Every list given in `where` must match (a resource's path is its `path`, else its name);
`names: ["*"]` takes every export of the kind.

An export outside the allow-list, or one that copies a file of this host (`source:`),
is refused and reported with the name of the host that exported it; it never runs.

```yaml
resources:
  - file: /srv/www/motd
    content: "hello from web1\\n"
    meta: {{export: true}}
collect:
  - kind: file
    where: {{paths: [/srv/www/]}}
```
"""


#: The top-level keys of the policy language, and the entry keys it reads:
#: (key, value, meaning) rows of the reference.
LANGUAGE_TOP_KEYS = (
    ("vars", "a mapping", "variables for templates: text, numbers, lists, mappings"),
    (
        "secrets",
        "a file name",
        "a YAML mapping of secret variables (mode 0600, owned by the user running "
        "convergent); their values are rendered into files, never shown in a report or diff",
    ),
    (
        "classes",
        "a mapping",
        '`name: "expression"`: classes of this host, defined over other classes and facts',
    ),
    (
        "include",
        "a name, a pattern or a list",
        "more policy files, relative to this one (`roles/*.yaml`); their vars, classes, "
        "bundles, resources and collect entries join this policy's",
    ),
    ("bundles", "a mapping", "named groups of resources with typed parameters, used like a kind"),
    (
        "invocations",
        "a mapping",
        "named runs of bundles with switches and guard rails (`convergent invoke`)",
    ),
)
LANGUAGE_ENTRY_KEYS = (
    (
        "for_each",
        "a list, a mapping, or a template giving one",
        "one resource per item: `{{ item }}` (and `{{ key }}`, the index or the mapping's "
        "key) in its strings",
    ),
    ("if", "an expression", "keep the entry (or bundle use) only where it holds"),
    (
        "template",
        "a file name",
        "a Jinja2 file, relative to the policy file, rendered into `content`",
    ),
)


def _rows_of(head: str, rows: tuple[tuple[str, str, str], ...]) -> str:
    lines = [f"| {head} | value | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{key}` | {value} | {meaning} |" for key, value, meaning in rows]
    return "\n".join(lines)


_LANGUAGE = (
    "## The policy language\n\n"
    + _rows_of("top-level key", LANGUAGE_TOP_KEYS)
    + "\n\n"
    + _rows_of("key of an entry", LANGUAGE_ENTRY_KEYS)
    + "\n\n"
    + """\
**Templates.** Any string may hold `{{ ... }}` (Jinja2, sandboxed): the policy's variables,
`facts` (`{{ facts.hostname }}`, `convergent facts` lists them), in a bundle its
parameters and `name`, in a `for_each` entry `item` and `key`. A name nobody defined is an
error at its `file:line:col` (in a template file, at that file's line), never an empty
string. A string that is one expression (`"{{ port }}"`) keeps the value's type, and is
text where the parameter takes text. To write `{{` as it is, put the text between
`{% raw %}` and `{% endraw %}`.

**Variables** given more than once take the last of: `vars:` of an included file, `vars:`
of the including policy, `--vars-file FILE` (in the order given), `--set NAME=VALUE` (the
value read as YAML), the `secrets:` file, `--set-secret NAME=VALUE`.

**Classes.** A host has the hard classes of its facts (`linux`, `debian`, `debian_12`,
`x86_64`, `container`, its host name with `-` and `.` as `_`), the classes given with
`--class NAME`, and those of `classes:` that hold. An expression is made of class names,
`and`, `or`, `not`, parentheses, and comparisons of a fact or variable with a value:
`hostname =~ 'web-*'` (a shell pattern), `os.version_id == '12'`, `!=`, `!~`. An unknown
class is false; `convergent check --strict` reports each one.

**Bundles.** `params:` maps each parameter to `{type: T, default: V}` (T: str, int, float,
bool, list, map, any; no default: every use gives it). A use is an entry
`- BUNDLE: NAME` with the parameters; `require`/`before`/`notify` of `BUNDLE[NAME]` reach
every resource of the use, and the use's own `require`/`before`/`notify` apply to each;
a use its `if:` leaves out is empty, so references to it still resolve.

```yaml
vars:
  users: [alice, bob]
classes:
  web: "hostname =~ 'web-*'"
bundles:
  webserver:
    params:
      port: {type: int, default: 80}
    resources:
      - file: "/etc/site-{{ name }}.conf"
        content: "port={{ port }}\\n"
resources:
  - file: "/home/{{ item }}/.profile"
    for_each: "{{ users }}"
    template: templates/profile.j2
  - webserver: main
    port: 8080
    if: web
```
"""
)


def field_docs(struct_type: type[Any]) -> dict[str, str]:
    """Field name -> description, read from ``struct_type``'s docstring."""
    doc = struct_type.__dict__.get("__doc__") or ""
    lines = inspect.cleandoc(doc).splitlines()
    docs: dict[str, str] = {}
    current: str | None = None
    started = False
    for line in lines:
        if not line.strip():
            started = True
            current = None
            continue
        if not started:
            continue
        if line[0].isspace():
            if current is not None:
                docs[current] += " " + line.strip()
            continue
        name, sep, text = line.partition(":")
        if sep and name.isidentifier() and text.strip():
            current = name
            docs[name] = text.strip()
        else:
            current = None
    return docs


def _markdown(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def _type_name(hint: Any) -> str:
    """A field type as policy authors read it: ``list[str] or str``, ``'a' or 'b'``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return " or ".join(
            f'"{v}"' if isinstance(v, str) else repr(v) for v in typing.get_args(hint)
        )
    if hint is type(None):
        return "null"
    if origin is list:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    if origin is dict:
        key, value = typing.get_args(hint)
        return f"mapping[{_type_name(key)}: {_type_name(value)}]"
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    value = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _nested(hint: Any) -> type[msgspec.Struct] | None:
    """The Struct inside ``hint`` (``IfNewer | None`` -> IfNewer), if any."""
    args = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return None


def _rows(struct_type: type[Any], prefix: str, fallback: dict[str, str]) -> list[str]:
    docs = field_docs(struct_type)
    rows: list[str] = []
    for field in msgspec.structs.fields(struct_type):
        name = prefix + field.encode_name
        text = docs.get(field.name) or fallback.get(field.name) or "(undocumented)"
        cells = [f"`{name}`", _markdown(_type_name(field.type)), _default(field), _markdown(text)]
        rows.append(f"| {' | '.join(cells)} |")
        inner = _nested(field.type)
        if inner is not None:
            rows.extend(_rows(inner, name + ".", {}))
    return rows


def _table(struct_type: type[Any], fallback: dict[str, str]) -> list[str]:
    rows = _rows(struct_type, "", fallback)
    if not rows:
        return ["No parameters."]
    return ["| name | type | default | description |", "| --- | --- | --- | --- |", *rows]


def _summary(cls: type[Any]) -> str:
    """The first paragraph of the kind's module docstring (one module per kind), or class's."""
    doc = sys.modules[cls.__module__].__doc__ or cls.__dict__.get("__doc__") or ""
    return _markdown(" ".join(inspect.cleandoc(doc).split("\n\n")[0].split()))


def render_reference(only: Iterable[str] | None = None) -> str:
    """The whole reference as markdown: every registered kind, or just the kinds in ``only``."""
    keys = "\n".join(f"| `{key.name}` | {key.value} | {key.meaning} |" for key in ENTRY_KEYS)
    out = [_INTRO.format(keys=keys), _LANGUAGE]
    out += ["## meta", "", *_table(Meta, _META_DOCS), "", "## Kinds", ""]
    for kind in kinds() if only is None else sorted(only):
        cls = get_kind(kind)
        if cls is None:
            continue
        out += [f"### {kind}", "", _summary(cls), "", *_table(cls.params_type, {}), ""]
        out += [f"Under `--noop`: {predicts(kind, cls)}.", ""]
        out += [f"`convergent destroy`: {_absent_state(cls)}.", ""]
    return "\n".join(out)


def _absent_state(cls: type[Any]) -> str:
    """What destroy makes of the kind (the ``Destroyable`` ability), or that it has none."""
    state: str | None = getattr(cls, "absent_state", None)
    return state if state is not None else "no absent state; left alone (and named)"


if __name__ == "__main__":
    sys.stdout.write(render_reference())
