"""What the policy loader makes of exports, collect entries, mgmt's ``@@`` and
``world[HOST].NAME`` references, and what it refuses."""

from __future__ import annotations

import pytest

from convergent.errors import PolicyError
from convergent.graph.collect import Collect, Where
from convergent.policy import load_policy_text


def _problems(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml")
    return str(caught.value)


def test_collect_entries_and_exports_are_read_with_the_graph() -> None:
    graph = load_policy_text(
        """
resources:
  - file: /srv/www/index.html
    content: hi
    meta: {export: [web1, web2]}
collect:
  - kind: file
    where: {paths: [/srv/www/], names: ["/srv/www/*"]}
""",
        "p.yaml",
    )
    assert graph.collect == (
        Collect(kind="file", where=Where(paths=["/srv/www/"], names=["/srv/www/*"])),
    )
    assert graph["file[/srv/www/index.html]"].meta.export == ["web1", "web2"]


def test_a_collect_without_an_allow_list_is_refused() -> None:
    text = _problems("resources: []\ncollect:\n  - kind: file\n")
    assert "p.yaml:3:5" in text
    assert "say what other hosts may write here with 'where:'" in text
    text = _problems("resources: []\ncollect:\n  - kind: file\n    where: {}\n")
    assert "where: is empty" in text
    text = _problems("resources: []\ncollect:\n  - kind: fiel\n    where: {names: ['*']}\n")
    assert "unknown resource kind 'fiel'" in text


def test_an_exported_resource_that_receives_is_refused() -> None:
    text = _problems(
        """
resources:
  - password: db
  - file: /tmp/x
    recv: {content: password[db].password}
    meta: {export: true}
"""
    )
    assert "an exported resource is published with the parameters written here" in text


def test_a_value_never_receives_a_secret() -> None:
    text = _problems(
        """
resources:
  - password: db
  - value: token
    recv: {content: password[db].password}
"""
    )
    assert "password[db].password is a secret" in text


def test_a_world_reference_adds_the_hosts_vertex_as_the_sender() -> None:
    graph = load_policy_text(
        """
resources:
  - file: /tmp/x
    recv: {content: world[db1].token}
  - exec: all
    cmd: [echo]
    recv: {cmd: world[*].token}
""",
        "p.yaml",
    )
    assert "world[db1]" in graph and "world[*]" in graph
    assert graph.edge("world[db1]", "file[/tmp/x]") is not None


def test_a_list_from_every_host_is_refused_where_text_is_taken() -> None:
    text = _problems("resources:\n  - file: /tmp/x\n    recv: {content: world[*].token}\n")
    assert "world[*].token is list" in text


def test_mgmt_exports_and_collect_keep_mgmts_meaning() -> None:
    graph = load_policy_text(
        """
graph: mygraph
resources:
  file:
  - name: file1a
    path: "/tmp/mgmtA/f1a"
    content: "i am f1\\n"
  - name: "@@file3a"
    path: "/tmp/mgmtA/f3a"
    content: "i am f3\\n"
collect:
- kind: file
  pattern: "/tmp/mgmtA/"
edges: []
""",
        "g.yaml",
    )
    assert graph["file[file3a]"].meta.export is True
    assert graph["file[file1a]"].meta.export is False
    assert graph.collect == (Collect(kind="file", pattern="/tmp/mgmtA/"),)
