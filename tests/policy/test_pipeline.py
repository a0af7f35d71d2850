"""One policy pipeline: front ends read into located plain entries, one builder checks them."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pytest
from yaml.nodes import Node

from convergent.errors import PolicyError
from convergent.policy import build as build_module
from convergent.policy import fast, load_policy_text, loader
from convergent.policy.build import build
from convergent.policy.entries import (
    EDGE_KEYS,
    ENTRY_KEY_NAMES,
    ENTRY_KEYS,
    Entry,
    Link,
    Location,
    Problems,
    edge,
)
from convergent.policy.reference import render_reference
from tests.policy.support import Widget

assert Widget.kind == "widget"

POLICY = textwrap.dedent(
    """\
    resources:
      - file: "/srv/a"
        content: "x"
        before: "exec[b]"
        notify: ["exec[b]", "noop[c]"]
      - exec: b
        cmd: ["true", "-v"]
        require: 'file[/srv/a]'
      - noop: c
    """
)


def _captured(monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[list[Entry], list[Link]]:
    """The entries and links the one builder was given while ``run()`` loaded a policy."""
    seen: list[tuple[list[Entry], list[Link]]] = []

    def spy(entries: list[Entry], links: list[Link], problems: Problems, collect: Any = ()) -> Any:
        seen.append(([copy.copy(e) for e in entries], links))  # as given, before build
        return build(entries, links, problems, collect)

    monkeypatch.setattr(build_module, "build", spy)
    monkeypatch.setattr(fast, "build", spy)
    run()
    assert len(seen) == 1, "each load goes through the builder exactly once"
    return seen[0]


def _plain(value: Any) -> list[Any]:
    """Every value reachable from an entry or link, to look for YAML nodes among them."""
    found = [value]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _plain(key) + _plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += _plain(item)
    elif hasattr(value, "__slots__"):
        for name in value.__slots__:
            found += _plain(getattr(value, name))
    return found


def test_entries_carry_locations_not_yaml_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    text = POLICY + '  - widget: w\n    path: /w\n    tags: [a, "b"]\n    meta: {retry: 2}\n'
    entries, links = _captured(monkeypatch, lambda: loader._load_yaml(text, "site.yaml"))
    everything = _plain(entries) + _plain(links)
    assert not [value for value in everything if isinstance(value, Node)]
    widget = entries[-1]
    assert widget.name_at == Location("site.yaml", 10, 13)
    assert widget.keys["tags"] == Location("site.yaml", 12, 5)
    assert widget.spots["tags[1]"] == Location("site.yaml", 12, 15)
    assert widget.meta_spots["retry"] == Location("site.yaml", 13, 19)


def test_the_fast_front_end_and_the_yaml_path_feed_the_builder_the_same_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as patched:
        fast_entries, fast_links = _captured(patched, lambda: fast.load_plain(POLICY, "site.yaml"))
    yaml_entries, yaml_links = _captured(
        monkeypatch, lambda: loader._load_yaml(POLICY, "site.yaml")
    )

    def entries(found: list[Entry]) -> list[Any]:
        return [(e.kind, e.name, e.kind_at, e.name_at, e.params, e.meta) for e in found]

    def links(found: list[Link]) -> list[Any]:
        return [
            (k.source, k.source_at, k.target, k.target_at, k.notify, k.label, k.owner)
            for k in found
        ]

    assert entries(fast_entries) == entries(yaml_entries)
    assert links(fast_links) == links(yaml_links)
    assert fast_links[1].target_at == Location("site.yaml", 5, 14)  # exec[b] in the flow list


def test_the_fast_front_end_has_no_builder_of_its_own() -> None:
    assert not [name for name in vars(fast) if "build" in name and name != "build"]
    assert getattr(fast, "build") is build_module.build  # noqa: B009


def test_a_problem_in_another_file_is_reported_at_its_own_location() -> None:
    site, other = "site.yaml", "other.yaml"
    entries = [
        Entry("noop", "a", Location(site, 2, 5), Location(site, 2, 11)),
        Entry("widget", "w", Location(other, 7, 5), Location(other, 7, 13)),
        Entry("noop", "a", Location(other, 9, 5), Location(other, 9, 11)),
    ]
    entries[1].params = {"path": "/w", "colour": "red"}
    entries[1].keys = {"path": Location(other, 8, 7), "colour": Location(other, 9, 7)}
    links = [
        Link("noop[zz]", Location(site, 3, 16), "noop[a]", Location(site, 2, 11), False, "require")
    ]
    problems = Problems(site)
    assert build(entries, links, problems) is None
    assert [str(problem) for problem in problems.sorted()] == [
        "site.yaml:3:16: require: no resource noop[zz] in this policy (did you mean 'noop[a]'?)",
        "other.yaml:9:7: widget[w]: unknown parameter 'colour'; widget takes: "
        "path, label, count, state, tags, size",
        "other.yaml:9:11: noop[a]: already defined at site.yaml:2:11; each kind[name] may "
        "appear once: merge the two entries or rename one",
    ]


def test_problems_of_one_file_keep_their_text() -> None:
    text = "resources:\n  - noop: a\n  - noop: a\n    require: noop[b]\n"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "site.yaml")
    assert str(caught.value) == (
        "site.yaml:3:11: noop[a]: already defined at line 2, column 11; each kind[name] may "
        "appear once: merge the two entries or rename one\n"
        "site.yaml:4:14: noop[a]: require: no resource noop[b] in this policy "
        "(did you mean 'noop[a]'?)"
    )


def test_entry_keys_are_defined_once() -> None:
    assert {key.name for key in ENTRY_KEYS} == ENTRY_KEY_NAMES
    reference = render_reference([])
    for key in ENTRY_KEYS:
        assert f"| `{key.name}` | {key.value} | {key.meaning} |" in reference
    for name in sorted(ENTRY_KEY_NAMES):
        text = f"resources:\n  - {name}: x\n"
        assert fast.load_plain(text) is None
        with pytest.raises(PolicyError) as caught:
            load_policy_text(text, "site.yaml")
        assert f"the first key of an entry is its kind, not '{name}'" in str(caught.value)
    assert edge("require", "me", "it") == ("it", "me", False)
    assert edge("before", "me", "it") == ("me", "it", False)
    assert edge("notify", "me", "it") == ("me", "it", True)
    assert set(EDGE_KEYS) == {"require", "before", "notify"}
