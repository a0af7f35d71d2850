"""The loader's fast path gives exactly the full path's graph, or leaves the policy to it."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.errors import PolicyError
from convergent.graph.core import Graph
from convergent.policy import fast, load_policy_text
from convergent.policy.fast import load_plain
from convergent.policy.loader import _load_yaml
from convergent.resources.base import Resource
from tests.policy.support import Widget

assert Widget.kind == "widget"  # registered: the fast path finds custom kinds too


def _shape(graph: Graph[Resource[Any]]) -> list[Any]:
    """Everything a graph says: vertices in order (kind, name, params, meta), edges."""
    vertices = [(type(r), r.kind, r.name, r.params, r.meta) for r in graph.vertices.values()]
    return [vertices, sorted((e.source, e.target, e.notify) for e in graph.edges()), graph.collect]


def _both(text: str) -> Graph[Resource[Any]]:
    """The fast path's graph, checked equal to the full path's."""
    text = textwrap.dedent(text)
    fast = load_plain(text)
    assert fast is not None, "expected the fast path to take this policy"
    assert _shape(fast) == _shape(_load_yaml(text, "p.yaml"))
    return fast


PLAIN = [
    # the shape the benchmark generates
    """
    resources:
      - file: "/srv/f0000"
        content: "i am f0000\\n"
        mode: "0644"
      - file: "/srv/f0001"
        content: "i am f0001\\n"
        mode: "0644"
    """,
    # plain words, single quotes with a doubled quote, escapes, comments, blank lines
    """
    # a comment before everything
    resources:

      - file: /srv/a
        content: 'it''s "quoted"'
        state: exists
      # a comment between entries
      - file: /srv/b
        content: "tab\\there \\\\ back \\"quote\\" # not a comment [x] {y}: z"
      - noop: done
      - widget: w-1.2_x
        path: /srv/w
        label: ''
    """,
    # entries at column 0 under resources:
    """
    resources:
    - file: /srv/a
      content: ""
    - noop: build
    """,
    # spaces after values and after the top key
    "resources:  \n  - file: /srv/a   \n    content: 'x'  \n    mode: \"0644\" \n",
    # the benchmark's W6: flow lists of double-quoted strings, a chain of requires
    """
    resources:
      - exec: a
        cmd: ["/bin/sh", "-c", "sleep 1 && echo \\"done\\" > a.done, [x]"]
        cwd: /srv
      - exec: b
        cmd: ["true"]
        require: ["exec[a]"]
      - exec: c
        cmd: ["true"]
        require: ["exec[b]", "exec[a]"]
    """,
    # the exchange benchmark's agents (W9b): meta as a flow mapping, collect with a pattern
    """
    resources:
      - file: /srv/x/h01/
        state: directory
      - file: h01-0
        path: /srv/x/h01/h01-0
        content: "h01 0\\n"
        meta: {export: true}
    collect:
      - kind: file
        pattern: /srv/x/h01/
    """,
    # collect first, meta with numbers, text and false, entries at column 0
    """
    collect:
    - kind: file
      pattern: "/srv/in/"
    - pattern: /srv/other/
      kind: noop
    resources:
    - noop: a
      meta: {retry: 3, delay: 0, noop: false, destroy: "keep", wait_timeout: 120}
    - noop: b
      require: ["noop[a]"]
      meta: {export: true}
    """,
    # before and notify, single references, an edge named twice, a reference to a later entry
    """
    resources:
      - file: /srv/a
        content: "x"
        before: "exec[b]"
        notify: ["exec[b]"]
      - exec: b
        cmd: ["true"]
        require: 'file[/srv/a]'
    """,
]


@pytest.mark.parametrize("text", PLAIN)
def test_plain_policies_give_the_full_paths_graph(text: str) -> None:
    _both(text)


def test_the_fast_path_keeps_resource_order_and_values() -> None:
    graph = _both(
        """
        resources:
          - file: /srv/z
            content: "line\\n"
          - file: /srv/a
            mode: "0600"
        """
    )
    assert list(graph) == ["file[/srv/z]", "file[/srv/a]"]
    assert graph["file[/srv/z]"].params.content == "line\n"
    assert graph["file[/srv/a]"].params.mode == "0600"


NOT_PLAIN = {
    "another top-level key": "resources:\n  - noop: a\nother: 1\n",
    "edges": "resources:\n  - noop: a\n  - noop: b\n    require: noop[a]\n",
    "an edge to no entry": 'resources:\n  - noop: a\n    require: ["noop[b]"]\n',
    "a self edge": 'resources:\n  - noop: a\n    before: "noop[a]"\n',
    "a cycle": (
        'resources:\n  - noop: a\n    require: "noop[b]"\n  - noop: b\n    require: "noop[a]"\n'
    ),
    "a malformed reference": 'resources:\n  - noop: a\n  - noop: b\n    require: ["noop a"]\n',
    "an empty flow list": "resources:\n  - exec: a\n    cmd: []\n",
    "a flow list without spaces": 'resources:\n  - exec: a\n    cmd: ["a","b"]\n',
    "a flow list of single quotes": "resources:\n  - exec: a\n    cmd: ['make']\n",
    "a flow list as a name": 'resources:\n  - noop: ["a"]\n',
    "a flow list for text": 'resources:\n  - file: /a\n    content: ["x"]\n',
    "meta as a block mapping": "resources:\n  - noop: a\n    meta:\n      noop: true\n",
    "meta with a list": 'resources:\n  - noop: a\n    meta: {export: ["b"]}\n',
    "meta with a bool word": "resources:\n  - noop: a\n    meta: {noop: yes}\n",
    "meta with a plain word": "resources:\n  - noop: a\n    meta: {destroy: keep}\n",
    "meta with an octal number": "resources:\n  - noop: a\n    meta: {retry: 010}\n",
    "meta with a key twice": "resources:\n  - noop: a\n    meta: {retry: 1, retry: 2}\n",
    "meta twice": "resources:\n  - noop: a\n    meta: {retry: 1}\n    meta: {delay: 1}\n",
    "meta without spaces": "resources:\n  - noop: a\n    meta: {retry:1}\n",
    "a flow mapping as a parameter": "resources:\n  - file: /a\n    content: {a: 1}\n",
    "an unknown meta key": "resources:\n  - noop: a\n    meta: {retyr: 1}\n",
    "collect with where": (
        "resources:\n  - noop: a\ncollect:\n  - kind: file\n    where: {paths: [/srv/]}\n"
    ),
    "collect without a pattern": "resources:\n  - noop: a\ncollect:\n  - kind: file\n",
    "collect of an unknown kind": (
        "resources:\n  - noop: a\ncollect:\n  - kind: flie\n    pattern: /srv/\n"
    ),
    "collect with a relative pattern": (
        "resources:\n  - noop: a\ncollect:\n  - kind: file\n    pattern: srv/\n"
    ),
    "collect twice": (
        "resources:\n  - noop: a\ncollect:\n  - kind: file\n    pattern: /a/\n"
        "collect:\n  - kind: file\n    pattern: /b/\n"
    ),
    "resources twice": "resources:\n  - noop: a\nresources:\n  - noop: b\n",
    "only collect": "collect:\n  - kind: file\n    pattern: /a/\n",
    "an empty collect": "resources:\n  - noop: a\ncollect:\n",
    "a flow list": "resources:\n  - exec: a\n    cmd: [make]\n",
    "a number": "resources:\n  - widget: a\n    path: /a\n    count: 3\n",
    "a bool word": "resources:\n  - widget: a\n    path: /a\n    state: on\n",
    "a null word": "resources:\n  - file: /a\n    content: null\n",
    "no value": "resources:\n  - file: /a\n    content:\n",
    "a comment after a value": "resources:\n  - file: /a # here\n",
    "a tab": "resources:\n  - file: /a\n    content:\t'x'\n",
    "non-ASCII text": "resources:\n  - file: /a\n    content: 'caf\u00e9'\n",
    "an unknown escape": 'resources:\n  - file: /a\n    content: "\\x41"\n',
    "DEL": "resources:\n  - file: /a\n    content: '\x7f'\n",
    "CRLF": "resources:\r\n  - noop: a\r\n",
    "an anchor": "resources:\n  - file: &x /a\n",
    "a tag": "resources:\n  - file: !!str /a\n",
    "a duplicate key": "resources:\n  - file: /a\n    mode: '0644'\n    mode: '0600'\n",
    "the kind twice": "resources:\n  - noop: a\n    noop: b\n",
    "a duplicate resource": "resources:\n  - noop: a\n  - noop: a\n",
    "an unknown kind": "resources:\n  - flie: /a\n",
    "an unknown parameter": "resources:\n  - file: /a\n    contents: 'x'\n",
    "a rejected value": "resources:\n  - file: /a\n    mode: '999'\n",
    "a wrong type": "resources:\n  - widget: a\n    path: /a\n    count: '3'\n",
    "a blank name": "resources:\n  - noop: ' '\n",
    "odd indentation": "resources:\n  - file: /a\n     mode: '0644'\n",
    "uneven entries": "resources:\n  - noop: a\n   - noop: b\n",
    "a key before any entry": "resources:\n    mode: '0644'\n",
    "no entries": "resources:\n",
    "an empty list": "resources: []\n",
    "mgmt's format": "graph: g\nresources:\n  noop:\n    - name: a\n",
    "a document marker": "---\nresources:\n  - noop: a\n",
    "a bool word as key": "resources:\n  - noop: a\n    on: 'x'\n",
    "a control character in a comment": "resources:\n  # a\x01b\n  - noop: a\n",
    "a tab on a blank line": "resources:\n \t\n  - noop: a\n",
    "a template": 'resources:\n  - file: /a\n    content: "{{ x }}"\n',
    "a template statement": "resources:\n  - file: /a\n    content: '{% if x %}y{% endif %}'\n",
    "a template comment": "resources:\n  - file: '/a{# c #}'\n",
    "for_each": 'resources:\n  - file: /a\n    for_each: "x"\n',
    "if": "resources:\n  - file: /a\n    if: linux\n",
    "template": "resources:\n  - file: /a\n    template: t.j2\n",
    "destroy": "resources:\n  - file: /a\n    destroy: remove\n",
    "vars after resources": "resources:\n  - noop: a\nvars: x\n",
    "vars first": "vars: x\nresources:\n  - noop: a\n",
    "a bundle use": "resources:\n  - webserver: main\n",
}


@pytest.mark.parametrize("why", sorted(NOT_PLAIN))
def test_anything_else_is_left_to_the_full_path(why: str) -> None:
    assert load_plain(NOT_PLAIN[why]) is None


@pytest.mark.parametrize("why", ["a rejected value", "a wrong type", "a duplicate resource"])
def test_problems_are_reported_by_the_full_path_with_their_location(why: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(NOT_PLAIN[why], "p.yaml")
    assert all(problem.line > 1 for problem in caught.value.problems)


def _quoted(value: str, style: int) -> str:
    if style == 0:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'
    if style == 1:
        return "'" + value.replace("'", "''") + "'"
    return value  # plain: the fast path takes it only when YAML reads it as text


_METAS = (
    "{noop: true}",
    "{retry: 010}",
    "{retry: 3, delay: 0}",
    "{export: true}",
    "{noop: yes}",
    "{retry:1}",
    '{destroy: "keep"}',
    "{destroy: keep}",
    '{destroy: "k\\"e"}',
    "{a: 1}",
    "{noop: true, noop: false}",
    "{wait_timeout: 999999999}",
)


def _random_policies(count: int) -> Iterator[str]:
    """Policies near the fast path's shape, many in it and many just outside."""
    import random

    rng = random.Random(4)
    alphabet = "ab/._-09 #:'\"\\[]{},&*!|>%@`\t\n~yesnoNULLtrue"
    language = ("{{ a }}", "{%", "{#", "{{", "{ {")
    for _ in range(count):
        lines = ["resources:"]
        dash = rng.choice((0, 2, 4))
        for _ in range(rng.randint(1, 4)):
            name = "/srv/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            lines.append(" " * dash + f"- file: {_quoted(name, rng.randint(0, 2))}")
            keys = ["content", "mode", "state", "owner", rng.choice(("for_each", "if", "x"))]
            for key in rng.sample(keys, rng.randint(0, 3)):
                value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
                if rng.random() < 0.1:
                    value += rng.choice(language)
                if key == "mode":
                    value = rng.choice(("0644", "644", "0755", "9", value))
                elif key == "state":
                    value = rng.choice(("exists", "absent", "directory", value))
                lines.append(" " * (dash + 2) + f"{key}: {_quoted(value, rng.randint(0, 2))}")
            if rng.random() < 0.3:
                lines.append(" " * (dash + 2) + "meta: " + rng.choice(_METAS))
            lines.append(rng.choice(("", "  # note", "")))
        if rng.random() < 0.2:
            lines += ["collect:", f"  - kind: {rng.choice(('file', 'noop', 'flie'))}"]
            lines.append(f"    pattern: {rng.choice(('/srv/in/', 'srv/', '/srv/in'))}")
        if rng.random() < 0.05:
            lines.append(rng.choice(("vars: {a: 1}", "include: []", "classes: {}")))
        yield "\n".join(lines) + "\n"


def test_random_plain_policies_give_the_full_paths_graph_or_are_left_to_it() -> None:
    taken = 0
    for text in _random_policies(1500):
        fast = load_plain(text)
        if fast is None:
            continue
        for syntax in ("{{", "{%", "{#", "for_each:", " if:", "vars:", "include:", "classes:"):
            assert syntax not in text, text  # the language is never the fast path's
        taken += 1
        assert _shape(fast) == _shape(_load_yaml(text, "p.yaml")), text
    assert taken > 80  # the comparison really ran on many policies


def test_the_fast_path_counts_the_values_yaml_composes_and_stops_where_the_full_path_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the limit at a policy's own count of values it loads; one less, and the fast
    path refuses it as libyaml's composer does (the same problem, at 1:1)."""
    from convergent.policy.nodes import compose, expanded_size

    texts = [textwrap.dedent(text) for text in PLAIN]
    texts += [text for text in _random_policies(600) if load_plain(text) is not None]
    assert len(texts) > 40
    for text in texts:
        root = compose(text)
        assert root is not None
        written = expanded_size(root)[0]
        monkeypatch.setattr(fast, "MAX_NODES", written)
        assert load_plain(text, "p.yaml") is not None, text
        monkeypatch.setattr(fast, "MAX_NODES", written - 1)
        with pytest.raises(PolicyError) as caught:
            load_plain(text, "p.yaml")
        (problem,) = caught.value.problems
        assert (problem.file, problem.line, problem.column) == ("p.yaml", 1, 1)
        assert problem.message.startswith("the policy is written with more than"), text


# The line pattern as first written, one alternation per character: the specification
# the faster spelling in policy/fast.py (runs of plain characters between escapes) must
# match exactly, groups included.
_SPEC_CHARS = r'(?:[ !#-\[\]-~]|\\[nt\\"])*'
_SPEC_LINE = re.compile(
    r"( *)(- )?([a-z_][a-z0-9_]*): "
    rf'(?:"({_SPEC_CHARS})"'
    r"|'((?:[ -&(-~]|'')*)'"
    r"|([A-Za-z/][A-Za-z0-9_./-]*)"
    rf'|\[("{_SPEC_CHARS}"(?:, "{_SPEC_CHARS}")*)\]) *'
)
_PIECES = st.sampled_from(
    ["a", " ", '"', "\\", "n", "t", "'", "''", "[", "]", ", ", "#", "\x7f", "\x01", "é", "/"]
)
_BODIES = st.lists(_PIECES, max_size=14).map("".join)


@settings(max_examples=3000, deadline=None)
@given(body=_BODIES, other=_BODIES, shape=st.integers(0, 5))
def test_the_line_pattern_reads_what_its_specification_reads(
    body: str, other: str, shape: int
) -> None:
    line = [
        f'  - file: "{body}"',
        f"    content: '{body}'",
        f'    cmd: ["{body}", "{other}"]',
        f"    cmd: [{body}]",
        f'    mode: "{body}"  ',
        f"    state: {body}",
    ][shape]
    want, got = _SPEC_LINE.fullmatch(line), fast._LINE.fullmatch(line)
    assert (want and want.groups()) == (got and got.groups())


@pytest.mark.parametrize(
    "written",
    [
        '"a\\\\nb"',
        '"\\\\\\n"',
        '"x\\ny\\n"',
        '"\\n\\\\"',
        '"t\\tn\\n"',
        '"\\"\\n\\""',
        '"\\\\\\\\n"',
    ],
)
def test_escapes_read_as_yaml_reads_them(written: str) -> None:
    """A backslash before n is a newline only when it is not itself escaped."""
    text = f"resources:\n  - file: /srv/a\n    content: {written}\n"
    fast = load_plain(text)
    assert fast is not None
    assert _shape(fast) == _shape(_load_yaml(text, "p.yaml"))
