"""bundles: typed parameters, uses like kinds, a use as a unit in the graph."""

from __future__ import annotations

from pathlib import Path

from tests.lang.support import load, problems, write

BUNDLE = """\
bundles:
  webserver:
    params:
      port: {type: int, default: 80}
      root: {type: str}
    resources:
      - file: "/etc/site-{{ name }}.conf"
        content: "port={{ port }} root={{ root }}\\n"
      - noop: "reload-{{ name }}"
        require: "file[/etc/site-{{ name }}.conf]"
"""


def test_each_use_makes_its_resources_with_its_params_and_defaults(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": BUNDLE
            + """\
resources:
  - webserver: main
    port: 8080
    root: /srv/main
  - webserver: api
    root: /srv/api
"""
        },
    )
    graph = load(policy)
    assert graph["file[/etc/site-main.conf]"].params.content == "port=8080 root=/srv/main\n"
    assert graph["file[/etc/site-api.conf]"].params.content == "port=80 root=/srv/api\n"
    assert graph.clusters == {
        "webserver[main]": ("file[/etc/site-main.conf]", "noop[reload-main]"),
        "webserver[api]": ("file[/etc/site-api.conf]", "noop[reload-api]"),
    }


def test_a_use_is_a_unit_for_require_and_notify(tmp_path: Path) -> None:
    """``require: webserver[main]`` waits for every resource of the use; the use's own
    ``require`` and ``notify`` apply to each of its resources."""
    policy = write(
        tmp_path,
        {
            "site.yaml": BUNDLE
            + """\
resources:
  - noop: first
  - webserver: main
    root: /srv
    require: noop[first]
    notify: noop[told]
  - noop: told
  - noop: after
    require: [webserver[main]]
"""
        },
    )
    graph = load(policy)
    members = graph.clusters["webserver[main]"]
    edges = {(e.source, e.target, e.notify) for e in graph.edges()}
    for member in members:
        assert ("noop[first]", member, False) in edges
        assert (member, "noop[told]", True) in edges
        assert (member, "noop[after]", False) in edges
    assert ("file[/etc/site-main.conf]", "noop[reload-main]", False) in edges


def test_a_use_left_out_by_if_is_an_empty_unit(tmp_path: Path) -> None:
    """One score for every host: a reference to a use this host leaves out still
    resolves, to nothing."""
    policy = write(
        tmp_path,
        {
            "site.yaml": BUNDLE
            + """\
resources:
  - webserver: main
    root: /srv
    if: nothere
  - noop: after
    require: webserver[main]
"""
        },
    )
    graph = load(policy)
    assert set(graph) == {"noop[after]"}
    assert graph.clusters == {"webserver[main]": ()}
    assert list(graph.edges()) == []


def test_wrong_params_are_reported_where_written(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": BUNDLE
            + """\
resources:
  - webserver: main
    port: eighty
    root: /srv
  - webserver: api
    prot: 81
  - webserver: main
    root: /x
"""
        },
    )
    found = [(p.line, p.column, p.message) for p in problems(policy)]
    assert found[0][:2] == (13, 11) and "port: expected an int" in found[0][2]
    assert found[1][:2] == (15, 16) and "missing parameter 'root'" in found[1][2]
    assert found[2][:2] == (16, 5) and "no parameter 'prot'" in found[2][2]
    assert found[3][:2] == (17, 16) and "used twice (first at line 12)" in found[3][2]


def test_a_bundle_named_like_a_kind_or_with_a_bad_default_is_refused(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            bundles:
              file:
                resources: []
              web:
                params:
                  port: {type: int, default: x}
                resources: []
            resources: []
            """
        },
    )
    found = [(p.line, p.message) for p in problems(policy)]
    assert found[0][0] == 2 and "name of a kind" in found[0][1]
    assert found[1][0] == 6 and "default is not an int" in found[1][1]


def test_a_bundle_cannot_use_itself(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            bundles:
              loop:
                resources:
                  - loop: "{{ name }}"
            resources:
              - loop: x
            """
        },
    )
    assert "cannot use itself" in problems(policy)[0].message


def test_invocations_and_destroy_are_accepted_for_the_invoke_layer(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        {
            "site.yaml": """\
            invocations:
              deploy: {methods: [web]}
            resources:
              - file: /a
                destroy: remove
              - file: /b
                meta: {destroy: keep}
              - file: /c
            """
        },
    )
    graph = load(policy)
    assert graph["file[/a]"].meta.destroy == "remove"
    assert graph["file[/b]"].meta.destroy == "keep"
    assert graph["file[/c]"].meta.destroy is None
    bad = write(tmp_path / "bad", {"p.yaml": "resources:\n  - file: /a\n    destroy: maybe\n"})
    [problem] = problems(bad)
    assert (problem.line, problem.column) == (3, 14)
