"""include: files relative to the including one, patterns, cycles, errors in their own file."""

from __future__ import annotations

from pathlib import Path

import pytest

from convergent.policy import include
from convergent.policy.nodes import compose, expanded_size
from tests.lang.support import load, problems, write


def test_included_files_join_the_policy(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            include: [common.yaml, roles/*.yaml]
            vars: {who: site}
            resources:
              - webserver: main
              - noop: last
                require: webserver[main]
            """,
            "common.yaml": """\
            vars: {who: common, greeting: hi}
            resources:
              - file: /etc/motd
                content: "{{ greeting }} {{ who }}"
            """,
            "roles/db.yaml": """\
            classes: {db: "hostname =~ 'db-*'"}
            resources:
              - noop: db
                if: db
            """,
            "roles/web.yaml": """\
            include: [../common.yaml]
            bundles:
              webserver:
                resources:
                  - file: "/etc/{{ name }}.conf"
                    template: web.j2
            """,
            "roles/web.j2": "{{ who }} {{ name }}\n",
        },
    )
    graph = load(policy)
    assert graph["file[/etc/motd]"].params.content == "hi site"  # the includer's vars win
    assert graph["file[/etc/main.conf]"].params.content == "site main\n"  # next to web.yaml
    assert "noop[db]" not in graph
    assert graph.clusters == {"webserver[main]": ("file[/etc/main.conf]",)}


def test_an_include_cycle_is_refused_with_its_chain(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": "include: [a.yaml]\nresources: []\n",
            "a.yaml": "include: [sub/b.yaml]\n",
            "sub/b.yaml": "include: [../a.yaml]\n",
        },
    )
    [problem] = problems(policy)
    assert problem.file == str(tmp_path / "sub" / "b.yaml")
    assert (problem.line, problem.column) == (1, 11)
    assert "include cycle" in problem.message and "a.yaml" in problem.message


def test_problems_in_included_files_keep_their_own_file_and_line(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            include: [roles/*.yaml, missing.yaml]
            resources:
              - file: /a
                mode: "0999"
            """,
            "roles/one.yaml": """\
            resources:
              - file: /b
                content: "{{ undefined_here }}"
            """,
            "roles/two.yaml": """\
            bogus: 1
            resources:
              - file: /c
                if: "linux and"
              - file: /d
                template: t.j2
            """,
            "roles/t.j2": "ok\n{{ nope }}\n",
            "roles/three.yaml": "resources:\n  - file: /e\n   bad: indent\n",
        },
    )
    found = {(Path(p.file).name, p.line, p.column) for p in problems(policy)}
    assert ("site.yaml", 1, 25) in found  # missing.yaml
    assert ("site.yaml", 4, 11) in found  # the bad mode
    assert ("one.yaml", 3, 14) in found
    assert ("two.yaml", 1, 1) in found
    assert ("two.yaml", 4, 19) in found  # the end of "linux and"
    assert ("t.j2", 2, 1) in found
    assert any(name == "three.yaml" and line == 3 for name, line, _ in found)


def test_a_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    policy = write(tmp_path, {"site.yaml": "include: roles/*.yaml\nresources: []\n"})
    [problem] = problems(policy)
    assert "no file matches" in problem.message


def test_the_values_of_all_the_files_of_a_policy_count_against_one_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy cannot pass the limit on values by spreading them over included files:
    each file read takes its share, and the file that passes it is refused."""
    files = {
        "site.yaml": "include: [a.yaml, b.yaml]\nresources:\n  - noop: main\n",
        "a.yaml": "resources:\n  - noop: a\n",
        "b.yaml": "resources:\n  - noop: b\n",
    }
    policy = write(tmp_path, files)
    counts = {name: expanded_size(compose(text))[0] for name, text in files.items()}  # type: ignore[arg-type]
    monkeypatch.setattr(include, "MAX_NODES", sum(counts.values()))
    assert sorted(load(policy).vertices) == ["noop[a]", "noop[b]", "noop[main]"]
    monkeypatch.setattr(include, "MAX_NODES", sum(counts.values()) - 1)
    (problem,) = problems(policy)
    assert (problem.file, problem.line, problem.column) == (str(policy), 1, 19)  # b.yaml
    assert problem.message.startswith(
        f"include: {tmp_path / 'b.yaml'}: the policy is written with more than 3,000,000 values"
    )
