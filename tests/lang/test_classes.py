"""classes:, --class and if: on entries and bundle uses; the expression language."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergent.policy.expr import ExprError, evaluate, parse
from tests.lang.support import FACTS, cli, load, problems, write

SITE = """\
classes:
  web: "hostname =~ 'web-*'"
  prod: "debian and not test"
  edge: "web and prod"
bundles:
  site:
    resources:
      - noop: "site-{{ name }}"
resources:
  - noop: web-only
    if: web
  - noop: db-only
    if: "hostname == 'db-1'"
  - noop: edge
    if: "edge and os.version_id == '12' and facts.arch != 'arm64'"
  - noop: tested
    if: "test or extra"
  - site: a
    if: "debian and (web or db)"
  - site: b
    if: not debian
"""


def test_classes_keep_only_the_entries_whose_if_holds(tmp_path: Path) -> None:
    graph = load(write(tmp_path, {"site.yaml": SITE}))
    assert set(graph) == {"noop[web-only]", "noop[edge]", "noop[site-a]"}
    db = load(write(tmp_path, {"site.yaml": SITE}), facts={**FACTS, "hostname": "db-1"})
    assert set(db) == {"noop[db-only]"}
    assert load(write(tmp_path, {"site.yaml": SITE}), classes=("db",)).clusters == {
        "site[a]": ("noop[site-a]",),
        "site[b]": (),  # left out by its if: an empty unit
    }


def test_if_sees_bundle_params_and_each_item(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            bundles:
              site:
                params: {tls: {type: bool, default: false}}
                resources:
                  - noop: "cert-{{ name }}"
                    if: "tls == 'true'"
                  - noop: "page-{{ name }}-{{ item }}"
                    for_each: [a, b, c]
                    if: "item != 'b' and linux"
            resources:
              - site: one
                tls: true
              - site: two
            """
        },
    )
    assert set(load(policy)) == {
        "noop[cert-one]",
        "noop[page-one-a]",
        "noop[page-one-c]",
        "noop[page-two-a]",
        "noop[page-two-c]",
    }


def test_a_class_from_the_command_line_counts(tmp_path: Path) -> None:
    policy = write(tmp_path, {"site.yaml": SITE})
    assert "noop[tested]" in load(policy, classes=("extra",))
    assert "noop[edge]" not in load(policy, classes=("test",))  # prod no longer holds


def test_expression_errors_are_reported_at_their_column(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            classes:
              a: "linux and"
            resources:
              - noop: x
                if: "debian and (web or db"
              - noop: y
                if: debian ==
              - noop: z
                if: "nofact.sub == 'x'"
            """
        },
    )
    found = [(p.line, p.column, p.message) for p in problems(policy)]
    assert found[0][:2] == (2, 16) and "ends too early" in found[0][2]
    assert found[1][:2] == (5, 31) and "'(' is not closed" in found[1][2]
    assert found[2][:2] == (7, 18) and "ends too early" in found[2][2]
    assert found[3][:2] == (9, 10) and "neither a fact" in found[3][2]


def test_a_class_defined_through_itself_is_an_error(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {"site.yaml": 'classes:\n  a: "b"\n  b: "not a"\nresources:\n  - noop: x\n    if: a\n'},
    )
    [problem] = problems(policy)
    assert "defined through itself: a -> b -> a" in problem.message


def test_unknown_classes_are_false_and_strict_check_lists_them(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            classes:
              web: "hostname =~ 'web-*'"
            resources:
              - noop: x
                if: "debain or web or centos_7 or aarch64"
            """
        },
    )
    assert "noop[x]" in load(policy)
    loose = cli("check", str(policy))
    assert loose.returncode == 0, loose.stderr
    strict = cli("check", "--strict", str(policy))
    assert strict.returncode == 2
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{policy}:5:10: unknown class 'debain'" in lines[0]


# -- the expression language against a reference evaluator --------------------------------

CLASSES = ("a", "b", "c", "web_1", "debian")
Tree = Any


def trees() -> st.SearchStrategy[Tree]:
    leaf = st.one_of(
        st.sampled_from(CLASSES).map(lambda n: ("class", n)),
        st.tuples(
            st.sampled_from(("==", "!=", "=~", "!~")),
            st.sampled_from(("hostname", "os.family", "role")),
            st.sampled_from(("web-1", "web-*", "debian", "d*", "db", "")),
        ).map(lambda t: ("cmp", *t)),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            inner.map(lambda x: ("not", x)),
            st.tuples(st.sampled_from(("and", "or")), inner, inner).map(lambda t: t),
        ),
        max_leaves=12,
    )


_PREC = {"or": 1, "and": 2, "not": 3, "class": 4, "cmp": 4}


def text_of(tree: Tree, parens: st.DataObject, need: int = 0) -> str:
    """The tree as text: parentheses where precedence needs them, and sometimes more."""
    kind = tree[0]
    if kind == "class":
        out = tree[1]
    elif kind == "cmp":
        out = f"{tree[2]} {tree[1]} '{tree[3]}'"
    elif kind == "not":
        out = "not " + text_of(tree[1], parens, _PREC["not"])
    else:
        # left-associative: the right side needs one more level
        left = text_of(tree[1], parens, _PREC[kind])
        right = text_of(tree[2], parens, _PREC[kind] + 1)
        out = f"{left} {kind} {right}"
    if _PREC[kind] < need or parens.draw(st.booleans()):
        out = f"({out})"
    return out


def reference(tree: Tree, have: set[str], values: dict[str, str]) -> bool:
    kind = tree[0]
    if kind == "class":
        return tree[1] in have
    if kind == "not":
        return not reference(tree[1], have, values)
    if kind == "and":
        return reference(tree[1], have, values) and reference(tree[2], have, values)
    if kind == "or":
        return reference(tree[1], have, values) or reference(tree[2], have, values)
    _, op, name, literal = tree
    left = values[name]
    return {
        "==": left == literal,
        "!=": left != literal,
        "=~": fnmatch.fnmatchcase(left, literal),
        "!~": not fnmatch.fnmatchcase(left, literal),
    }[op]


@settings(max_examples=400, deadline=None)
@given(tree=trees(), have=st.sets(st.sampled_from(CLASSES)), data=st.data())
def test_parsed_expressions_agree_with_a_reference_evaluator(
    tree: Tree, have: set[str], data: st.DataObject
) -> None:
    values = {"hostname": "web-1", "os.family": "debian", "role": "db"}
    text = text_of(tree, data)
    parsed = parse(text)
    got = evaluate(parsed, have.__contains__, lambda name, _: values[name])
    assert got == reference(tree, have, values), text


@pytest.mark.parametrize(
    ("text", "offset"),
    [("", 0), ("a and", 5), ("(a", 2), ("a b", 2), ("'x'", 0), ("a == ", 5), ("a $ b", 2)],
)
def test_malformed_expressions_say_where(text: str, offset: int) -> None:
    with pytest.raises(ExprError) as caught:
        parse(text)
    assert caught.value.offset == offset


def test_an_expression_is_never_evaluated_as_python() -> None:
    with pytest.raises(ExprError):
        parse("__import__('os').system('false')")
