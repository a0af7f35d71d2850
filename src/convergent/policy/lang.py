"""The policy language on top of the plain format: vars, templates, for_each, ``if:``,
bundles and includes, read into the entries and links every front end produces.

A policy that uses none of it (``loader._uses_language`` says) is read by
:mod:`convergent.policy.native` alone. Otherwise its YAML nodes are rewritten here before
the plain reader sees them: every string with ``{{ ... }}`` is rendered
(:mod:`convergent.policy.template`), an entry with ``for_each:`` becomes one entry per
item, an entry whose ``if:`` does not hold is dropped, a ``template:`` becomes the
``content:`` it renders to, and a bundle use becomes the bundle's resources
(:mod:`convergent.policy.bundles`). The new nodes keep the marks of the nodes they were
made from, so every problem, in an expanded entry too, is reported where it is written
(in the included file it is written in); a problem inside a template file at that file's
line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from convergent.policy.entries import MAX_RESOURCES, Entry, Link, Problems, mark_file
from convergent.policy.nodes import MAP, NULL, SEQ, STR, Values, describe, is_list, is_mapping
from convergent.policy.nodes import is_scalar as _is_scalar
from convergent.policy.template import (
    MAX_LOAD_ITEMS,
    MAX_LOAD_TEXT,
    TemplateError,
    has_template,
    weigh,
)

if TYPE_CHECKING:
    from convergent.graph.collect import Collect
    from convergent.policy.bundles import Bundle
    from convergent.policy.vars import Inputs

__all__ = ["LANG_ENTRY_KEYS", "LANG_TOP_KEYS", "Read", "Site", "read_site"]

#: Top-level keys of the language (besides ``resources`` and ``collect``).
_NOTHING = object()
LANG_TOP_KEYS = ("vars", "classes", "include", "bundles", "invocations", "secrets")
#: Keys of an entry the language reads (never passed to a kind).
LANG_ENTRY_KEYS = ("for_each", "if", "template")
_TAG = "tag:yaml.org,2002:"
ReadEntry = Callable[[Node, Values, list[Entry], list[Link]], None]


class Read:
    """What :func:`read_site` read: entries, links, collect entries, and the graph's
    bundle clusters, secret values and the parameters holding them."""

    __slots__ = ("clusters", "collect", "entries", "held", "links", "secrets")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.links: list[Link] = []
        self.collect: tuple[Collect, ...] = ()
        self.clusters: dict[str, tuple[str, ...]] = {}
        self.secrets: frozenset[str] = frozenset()
        self.held: dict[str, tuple[str, ...]] = {}


class _Made:
    """One entry node the language made, ready for the plain reader."""

    __slots__ = ("clusters", "node", "origin", "secret_keys", "values")

    def __init__(
        self,
        node: MappingNode,
        values: Values,
        clusters: tuple[str, ...],
        origin: tuple[int, int] | None,
        secret_keys: frozenset[str],
    ) -> None:
        self.node = node
        self.values = values
        self.clusters = clusters
        self.origin = origin
        self.secret_keys = secret_keys


class Site:
    """One load of a policy in the language: its scope, bundles, classes, problems."""

    def __init__(self, problems: Problems, inputs: Inputs) -> None:
        self.problems = problems
        self.inputs = inputs
        self.scope: dict[str, Any] = {}
        self.secrets: set[str] = set()
        self.shown: set[str] = set()  # secrets in another form (Site._secret_in)
        self._shift_cache: dict[bool, tuple[Mapping[str, Any], tuple[int, ...], dict[str, Any]]]
        self._shift_cache = {}
        self._memos: dict[bool, dict[Any, tuple[Any, Any]]] = {False: {}, True: {}}
        self.shifted_names: dict[str, tuple[Any, Any]] = {}  # Site.shifted_as
        self.last_shows = False  # the last template rendered showed a secret
        self.last_other: Any = None  # and what it rendered to with the secrets changed
        self.template_secret = False  # the last template file rendered holds a secret
        self.bundles: dict[str, Bundle] = {}
        self.classes: Any = None
        self.made: list[_Made] = []
        # (characters, items) the templates rendered so far; None once past the budget
        self.spent: tuple[int, int] | None = (0, 0)
        self._hits: set[str] = set()  # keys of the entry being rendered that hold a secret
        self.uses: dict[str, Node] = {}  # BUNDLE[USE] -> where it is used
        self.links: list[Link] = []  # written by bundle uses
        self.templates: dict[str, str] = {}  # template files read, by path
        self._paths: dict[tuple[str, str], str] = {}  # (file, template: value) -> path

    # -- rendering nodes ------------------------------------------------------------------

    def render(self, node: Node, scope: Mapping[str, Any], owner: str | None = None) -> Node:
        """``node`` with every template in its strings rendered (the same node when none).

        A problem is reported at the string; the string is then left as written.
        """
        if _is_scalar(node):
            if node.tag != STR or not has_template(node.value) or self.spent is None:
                return node  # (spent None: the load's templates rendered all they may)
            from convergent.policy.template import render

            try:
                value = render(node.value, scope)
            except TemplateError as exc:
                if self.secrets:
                    self._error_forms(exc, lambda shifted: render(node.value, shifted), scope)
                self.template_problem(node, exc, owner)
                return node
            if not self.afford(value, node):
                return node
            if self.secrets and self._secret_in(
                value, lambda shifted: render(node.value, shifted), scope
            ):
                self._hits.add("")
            return to_node(value, node)
        if is_list(node):
            items = [self.render(item, scope, owner) for item in node.value]
            if all(a is b for a, b in zip(items, node.value, strict=True)):
                return node
            return SequenceNode(node.tag, items, node.start_mark, node.end_mark)
        if is_mapping(node):
            pairs = [(k, self.render(v, scope, owner)) for k, v in node.value]
            if all(a[1] is b[1] for a, b in zip(pairs, node.value, strict=True)):
                return node
            return MappingNode(node.tag, pairs, node.start_mark, node.end_mark)
        return node

    def afford(self, value: Any, node: Node) -> bool:
        """Count what a template rendered against the load's budget; past it, one problem
        (at ``node``) and no template is rendered any more."""
        if self.spent is None:
            return False
        text, items = weigh(value, MAX_LOAD_ITEMS)
        spent = self.spent = (self.spent[0] + text, self.spent[1] + items)
        if spent[0] <= MAX_LOAD_TEXT and spent[1] <= MAX_LOAD_ITEMS:
            return True
        self.spent = None
        self.problems.at(
            node,
            f"the templates of this policy render more than {MAX_LOAD_TEXT:,} characters "
            f"or {MAX_LOAD_ITEMS:,} list items in all; render less (a for_each over fewer "
            "items), or keep large contents in files that 'source:' copies",
        )
        return False

    def _holds_secret(self, value: Any) -> bool:
        text = value if isinstance(value, str) else repr(value)
        return any(secret in text for secret in self.secrets)

    def _secret_in(self, value: Any, again: Callable[[Any], Any], scope: Mapping[str, Any]) -> bool:
        """Whether ``value`` (what ``again`` renders in ``scope``) holds a secret, as it
        is or in another form (``urlencode``, ``upper``, a variable that holds it...):
        rendered again with every secret changed, it differs. The parts that differ are
        kept as secrets of their own (:mod:`convergent.policy.secretforms`)."""
        from convergent.policy.secretforms import forms

        other: Any = None
        self.last_other = None
        for keep in (False, True):  # a template that needs letters or digits: the second
            try:
                other = again(self._shifted(scope, keep))
            except TemplateError:
                other = None  # the changed secrets broke it: all of it counts
                continue
            self.last_other = other
            break
        self.shown.update(forms(value, other))
        self.last_shows = other != value or self._holds_secret(value)
        return self.last_shows

    def _error_forms(
        self, error: TemplateError, again: Callable[[Any], Any], scope: Mapping[str, Any]
    ) -> None:
        """Keep what a failed template's message quotes of a secret (``'dict object' has
        no attribute 'HUNTER2'``): the part that differs in the message of the same
        failure with every secret changed."""
        from convergent.policy.secretforms import forms

        try:
            again(self._shifted(scope, False))
        except TemplateError as other:
            self.shown.update(forms(error.message, other.message))

    def shifted_as(self, name: str, value: Any) -> None:
        """The variable (or bundle parameter) ``name`` was just rendered to ``value``:
        when that showed a secret, its second rendering stands for it in every later
        one, whatever its type (a list of a secret's characters, a number)."""
        if self.last_shows and self.last_other is not None:
            self.shifted_names[name] = (value, self.last_other)

    def _shifted(self, scope: Mapping[str, Any], keep: bool) -> Mapping[str, Any]:
        """``scope`` with every secret changed (``secretforms.shifted``), and each
        variable that showed one given its second rendering."""
        from convergent.policy.secretforms import shift_scope

        # the scope of variables changes as each is rendered: what it holds is the key
        held = (len(self.shifted_names), *map(id, scope.values()))
        cached = self._shift_cache.get(keep)
        if cached is not None and cached[0] is scope and cached[1] == held:
            return cached[2]
        shifted = shift_scope(scope, tuple(self.secrets), self._memos[keep], keep)
        for name, (held, other) in self.shifted_names.items():
            if scope.get(name, _NOTHING) is held:
                shifted[name] = other
        self._shift_cache[keep] = (scope, held, shifted)
        return shifted

    def template_problem(self, node: Node, exc: TemplateError, owner: str | None) -> None:
        if exc.file is not None:
            self.problems.at(_located(exc.file, exc.line or 1, 1), exc.message, owner)
            return
        mark = node.start_mark
        if exc.line and exc.line > 1 and getattr(node, "style", None) in ("|", ">"):
            file = mark_file(mark, self.problems.filename)
            self.problems.at(_located(file, mark.line + exc.line, 1), exc.message, owner)
            return
        self.problems.at(node, exc.message, owner)

    # -- entries --------------------------------------------------------------------------

    def expand(
        self,
        node: Node,
        values: Values,
        scope: Mapping[str, Any],
        clusters: tuple[str, ...] = (),
        depth: int = 0,
    ) -> None:
        """Make the entries of one item of a ``resources:`` list (or a bundle's)."""
        if not is_mapping(node) or not node.value:
            self.made.append(_Made(node, values, clusters, None, frozenset()))  # type: ignore[arg-type]
            return
        pairs = values.pairs(node)
        lang = {k: (kn, v) for k, kn, v in pairs if k in LANG_ENTRY_KEYS}
        kind = pairs[0][0] if pairs else ""
        items: list[tuple[Any, Any]] = [(None, None)]
        origin = None
        if "for_each" in lang:
            found = self.for_each(lang["for_each"][1], values, scope)
            if found is None:
                return
            items = found
            origin = id(node)
        rest = [(kn, v) for k, kn, v in pairs if k not in LANG_ENTRY_KEYS]
        for index, (key, item) in enumerate(items):
            if len(self.made) > MAX_RESOURCES:  # one past: the builder refuses them all
                return
            inner = dict(scope)
            if origin is not None:
                inner["item"] = item
                inner["key"] = key
            if "if" in lang and not self.holds(lang["if"][1], values, inner):
                if kind in self.bundles:  # not here: a unit with nothing in it
                    self._empty_use(kind, rest[0][1], inner)
                continue
            if kind in self.bundles and kind not in LANG_ENTRY_KEYS:
                from convergent.policy.bundles import use_bundle

                use_bundle(self, self.bundles[kind], rest, values, inner, clusters, depth)
                continue
            self._hits = set()
            new_pairs: list[tuple[Node, Node]] = []
            hits: set[str] = set()
            for key_node, value_node in rest:
                rendered = self.render(value_node, inner)
                if rendered is not value_node and _is_scalar(rendered) and rendered.tag != STR:
                    rendered = _as_text_if_wanted(kind, key_node.value, rendered)
                if self._hits:
                    hits.add(key_node.value)
                    self._hits = set()
                new_pairs.append((key_node, rendered))
            if "template" in lang:
                content = self.template(lang["template"], rest, values, inner)
                if content is None:
                    continue
                if self.template_secret:
                    hits.add("content")
                new_pairs.append(content)
            made = MappingNode(node.tag, new_pairs, node.start_mark, node.end_mark)
            where = (origin, index) if origin is not None else None
            self.made.append(_Made(made, values, clusters, where, frozenset(hits)))

    def _empty_use(self, bundle: str, name_node: Node, scope: Mapping[str, Any]) -> None:
        """A use whose ``if:`` does not hold: references to it resolve, to nothing."""
        from convergent.graph.identity import format_id

        rendered = self.render(name_node, scope)
        if _is_scalar(rendered) and str(rendered.value).strip():
            self.uses.setdefault(format_id(bundle, str(rendered.value)), name_node)

    def holds(self, node: Node, values: Values, scope: Mapping[str, Any]) -> bool:
        """Whether the ``if:`` expression at ``node`` holds on this host."""
        from convergent.policy.classes import condition

        return condition(self, node, values, scope)

    def for_each(
        self, node: Node, values: Values, scope: Mapping[str, Any]
    ) -> list[tuple[Any, Any]] | None:
        """``(key, item)`` of each item ``for_each:`` names (key: the index of a list)."""
        rendered = self.render(node, scope)
        value = values.value(rendered)
        if isinstance(value, list):
            return list(enumerate(value))
        if isinstance(value, dict):
            return list(value.items())
        if rendered is node and _is_scalar(node) and has_template(node.value):
            return None  # a template problem, reported
        self.problems.at(
            node,
            f"for_each: expected a list, a mapping, or a template that gives one "
            f'(like "{{{{ users }}}}"), got {describe(rendered)}',
        )
        return None

    def template(
        self,
        found: tuple[Node, Node],
        rest: list[tuple[Node, Node]],
        values: Values,
        scope: Mapping[str, Any],
    ) -> tuple[Node, Node] | None:
        """The ``content:`` pair a ``template: FILE`` renders to."""
        key_node, value_node = found
        if any(k.value == "content" for k, _ in rest):
            self.problems.at(key_node, "give either template: or content:, not both")
            return None
        path_node = self.render(value_node, scope)
        if not _is_scalar(path_node) or path_node.tag != STR or not path_node.value:
            self.problems.at(value_node, "template: expected the path of a Jinja2 file")
            return None
        here = mark_file(value_node.start_mark, self.problems.filename)
        path = self._paths.get((here, path_node.value))
        if path is None:
            joined = os.path.join(os.path.dirname(here), path_node.value)
            path = self._paths[(here, path_node.value)] = os.path.normpath(joined)
        from convergent.policy.template import render_file

        if self.spent is None:
            return None

        def again(shifted: Mapping[str, Any]) -> str:
            return render_file(path, shifted, self.templates)

        self.template_secret = False
        try:
            text = render_file(path, scope, self.templates)
        except TemplateError as exc:
            if self.secrets:
                self._error_forms(exc, again, scope)
            if exc.file is None:
                self.problems.at(value_node, exc.message)
            else:
                self.template_problem(value_node, exc, None)
            return None
        if not self.afford(text, value_node):
            return None
        if self.secrets:
            self.template_secret = self._secret_in(text, again, scope)
        content_key = ScalarNode(STR, "content", key_node.start_mark, key_node.end_mark)
        return content_key, ScalarNode(STR, text, value_node.start_mark, value_node.end_mark)


_TEXT_FIELDS: dict[tuple[str, str], bool] = {}


def _as_text_if_wanted(kind: str, key: str, node: ScalarNode) -> Node:
    """A number or bool a lone expression gave, as text where the kind's parameter takes
    text and not that (``content: "{{ port }}"``), as Jinja2 would write it."""
    wanted = _TEXT_FIELDS.get((kind, key))
    if wanted is None:
        wanted = _TEXT_FIELDS[(kind, key)] = _takes_only_text(kind, key)
    if not wanted:
        return node
    from convergent.policy.nodes import Values as _V

    value = _V(Problems(""), False).value(node)
    return ScalarNode(STR, str(value), node.start_mark, node.end_mark)


def _takes_only_text(kind: str, key: str) -> bool:
    import msgspec

    from convergent.resources.base import get_kind

    cls = get_kind(kind)
    if cls is None:
        return False
    for field in msgspec.structs.fields(cls.params_type):
        if field.encode_name == key:
            text = repr(field.type)
            return "str" in text and not any(t in text for t in ("int", "float", "bool"))
    return False


def _located(file: str, line: int, col: int) -> Any:
    from convergent.policy.entries import Location

    return Location(file, line, col)


def to_node(value: Any, like: Node) -> Node:
    """A node that reads as ``value``, with the marks of ``like``."""
    start, end = like.start_mark, like.end_mark
    if isinstance(value, str):
        return ScalarNode(STR, value, start, end)
    if isinstance(value, bool):
        return ScalarNode(_TAG + "bool", "true" if value else "false", start, end)
    if isinstance(value, int):
        return ScalarNode(_TAG + "int", str(value), start, end)
    if isinstance(value, float):
        return ScalarNode(_TAG + "float", repr(value), start, end)
    if value is None:
        return ScalarNode(NULL, "null", start, end)
    if isinstance(value, Mapping):
        pairs = [(ScalarNode(STR, str(k), start, end), to_node(v, like)) for k, v in value.items()]
        return MappingNode(MAP, pairs, start, end)
    if isinstance(value, (list, tuple)):
        return SequenceNode(SEQ, [to_node(v, like) for v in value], start, end)
    return ScalarNode(STR, str(value), start, end)


def read_site(root: MappingNode, values: Values, inputs: Inputs, read_entry: ReadEntry) -> Read:
    """Read a policy in the language (see the module docstring)."""
    from convergent.policy.include import gather
    from convergent.policy.scope import make_scope

    problems = values.problems
    site = Site(problems, inputs)
    read = Read()
    docs = gather(root, values)
    make_scope(site, docs)
    from convergent.policy.classes import read_classes

    site.classes = read_classes(site, docs)
    if any("bundles" in doc.keys for doc in docs):
        from convergent.policy.bundles import read_bundles

        read_bundles(site, docs)
    for doc in docs:
        if "collect" in doc.keys:
            from convergent.policy.collect import read_collect

            read.collect += read_collect(doc.keys["collect"][1], doc.values, native=True)
    for doc in docs:
        resources = doc.keys.get("resources")
        if resources is None:
            continue
        if not is_list(resources[1]):
            problems.at(
                resources[1],
                f"'resources:' must be a list of entries like '- file: /etc/motd', "
                f"got {describe(resources[1])}",
            )
            continue
        for item in resources[1].value:
            site.expand(item, doc.values, site.scope)
    if not any("resources" in doc.keys for doc in docs):
        problems.at(root, "the policy has no 'resources:' key; list the resources under it")
    _read_made(site, read, read_entry)
    return read


def _read_made(site: Site, read: Read, read_entry: ReadEntry) -> None:
    """The plain reader over every made entry; then clusters, edges of bundles, secrets."""
    members: dict[str, list[str]] = {key: [] for key in site.uses}
    seen: dict[str, tuple[int, int]] = {}
    entries = read.entries
    for made in site.made:
        before = len(entries)
        read_entry(made.node, made.values, entries, read.links)
        if len(entries) == before:
            continue
        entry = entries[-1]
        rid = entry.id
        if made.origin is not None:
            other = seen.get(rid)
            if other is not None and other[0] == made.origin[0]:
                site.problems.at(
                    entry.name_at,
                    f"for_each gives items {other[1] + 1} and {made.origin[1] + 1} the same "
                    f"name, {rid}; put '{{{{ item }}}}' (or '{{{{ key }}}}') in the name so "
                    "each item names its own resource",
                    rid,
                )
                entries.pop()
                continue
            seen[rid] = made.origin
        for cluster in made.clusters:
            members[cluster].append(rid)
        if made.secret_keys:
            read.held[rid] = tuple(sorted(k for k in made.secret_keys if k))
            if entry.kind in made.secret_keys:
                site.problems.at(
                    entry.name_at,
                    "this name holds a secret, and a name is shown in every report, log "
                    "and history; name the resource without it (its parameters may hold it)",
                    rid,
                )
            if entry.kind == "value" or entry.meta.get("export"):
                site.problems.at(
                    entry.name_at,
                    "a secret variable would be published to other hosts in clear here "
                    "(an exported resource or a value); share the secret another way",
                    rid,
                )
    read.links.extend(site.links)
    read.clusters = {key: tuple(ids) for key, ids in members.items()}
    read.secrets = frozenset(site.secrets | site.shown)
    if read.clusters:
        read.links = _bundle_links(read.links, read.clusters)


def _bundle_links(links: list[Link], clusters: dict[str, tuple[str, ...]]) -> list[Link]:
    """Links to or from ``BUNDLE[USE]`` become links to or from each of its resources."""
    out: list[Link] = []
    for link in links:
        sources = clusters.get(link.source, (link.source,))
        targets = clusters.get(link.target, (link.target,))
        if sources == (link.source,) and targets == (link.target,):
            out.append(link)
            continue
        for source in sources:
            for target in targets:
                if source != target:
                    out.append(
                        Link(
                            source,
                            link.source_at,
                            target,
                            link.target_at,
                            link.notify,
                            link.label,
                            link.owner,
                            link.recv,
                        )
                    )
    return out
