"""for_each: one entry per item of a list or mapping, each at the entry's location."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lang.support import load, problems, write


def test_a_list_makes_one_resource_per_item(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars:
              users: [alice, bob]
            resources:
              - file: "/home/{{ item }}/.profile"
                for_each: "{{ users }}"
                content: "user {{ item }} is number {{ key }}\\n"
              - file: "/srv/{{ item.name }}"
                for_each:
                  - {name: a, mode: "0600"}
                  - {name: b, mode: "0644"}
                mode: "{{ item.mode }}"
            """
        },
    )
    graph = load(policy)
    assert graph["file[/home/alice/.profile]"].params.content == "user alice is number 0\n"
    assert graph["file[/home/bob/.profile]"].params.content == "user bob is number 1\n"
    assert graph["file[/srv/b]"].params.mode == "0644"


def test_a_mapping_gives_key_and_item(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars:
              sites: {main: 8080, api: 8081}
            resources:
              - file: "/etc/{{ key }}.conf"
                for_each: "{{ sites }}"
                content: "{{ key }}={{ item }}"
            """
        },
    )
    graph = load(policy)
    assert graph["file[/etc/main.conf]"].params.content == "main=8080"
    assert graph["file[/etc/api.conf]"].params.content == "api=8081"


def test_a_bundle_use_iterates_too(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            bundles:
              site:
                params: {port: {type: int}}
                resources:
                  - file: "/etc/{{ name }}"
                    content: "{{ port }}"
            resources:
              - site: "{{ key }}"
                for_each: {a: 1, b: 2}
                port: "{{ item }}"
            """
        },
    )
    graph = load(policy)
    assert graph["file[/etc/b]"].params.content == "2"
    assert set(graph.clusters) == {"site[a]", "site[b]"}


def test_an_expanded_entry_keeps_the_entry_location_for_errors(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: "/srv/{{ item }}"
                for_each: [a, b]
                mode: "{{ 'zz' if item == 'b' else '0644' }}"
            """
        },
    )
    [problem] = problems(policy)
    assert (problem.file, problem.line, problem.column) == (str(policy), 4, 11)
    assert problem.resource == "file[/srv/b]"


def test_items_giving_the_same_name_are_a_clear_error(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - file: "/srv/{{ item | lower }}"
                for_each: [a, B, b]
            """
        },
    )
    [problem] = problems(policy)
    assert problem.line == 2
    assert "items 2 and 3 the same name, file[/srv/b]" in problem.message
    assert "{{ item }}" in problem.message


def test_for_each_over_something_else_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            vars: {n: 3}
            resources:
              - file: "/srv/{{ item }}"
                for_each: "{{ n }}"
            """
        },
    )
    [problem] = problems(policy)
    assert problem.line == 4 and "expected a list, a mapping" in problem.message


def test_making_more_resources_than_the_limit_stops_at_the_first_one_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three lines may ask for millions of entries: the language stops making them at the
    first one past the limit (here 3), which the builder names, at the entry that made it."""
    from convergent.policy import build, lang

    made: list[object] = []

    class Counted(lang._Made):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(lang, "_Made", Counted)
    for module in (build, lang):
        monkeypatch.setattr(module, "MAX_RESOURCES", 3)
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            resources:
              - noop: "n{{ key }}"
                for_each: "{{ range(100000) | list }}"
            """
        },
    )
    (problem,) = problems(policy)
    assert (problem.line, problem.column, problem.resource) == (2, 5, "noop[n3]")
    assert problem.message.startswith("more than 250,000 resources in one policy")
    assert len(made) == 4
