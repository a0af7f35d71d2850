"""mgmt yamlgraph files load as mgmt means them, and what has no meaning here is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convergent.errors import PolicyError, Problem
from convergent.graph.core import Edge
from convergent.policy import load_policy
from convergent.resources.base import Meta
from convergent.resources.exec import Exec
from tests.policy.support import Widget, load, problems_of, the_problem

DATA = Path(__file__).parent / "data"


def _edges(graph: Any) -> list[Edge]:
    return sorted(graph.edges(), key=lambda e: (e.source, e.target))


def _exec(graph: Any, vid: str) -> Exec:
    resource = graph[vid]
    assert isinstance(resource, Exec)
    return resource


def test_an_mgmt_exec_chain_loads_with_mgmt_command_semantics() -> None:
    graph = load_policy(DATA / "mgmt_exec_chain.yaml")
    assert list(graph) == ["exec[exec1]", "exec[exec2]", "exec[exec3]", "noop[noop1]"]
    assert _edges(graph) == [
        Edge("exec[exec1]", "exec[exec2]"),
        Edge("exec[exec2]", "noop[noop1]", notify=True),
        Edge("exec[exec3]", "exec[exec2]"),
    ]
    # Without a shell mgmt splits cmd on whitespace; with one it runs [shell, -c, cmd].
    exec1, exec2, exec3 = (_exec(graph, f"exec[exec{i}]") for i in (1, 2, 3))
    assert exec1.params.cmd == ["echo", "hello", "from", "exec1"]
    assert exec1.params.timeout is None and exec1.params.onlyif is None
    assert exec2.params.cmd == ["/bin/bash", "-c", "test -e /nonexistent || echo missing"]
    assert exec2.params.timeout == 30
    assert exec2.params.onlyif == ["test", "-d", "/"]
    assert exec3.params.cmd == ["true", "--quiet", "two words"]


def test_mgmt_meta_noop_is_kept_and_defaults_are_accepted() -> None:
    graph = load_policy(DATA / "mgmt_noop_meta.yaml")
    assert list(graph) == ["noop[noop1]", "exec[exec1]"]
    assert list(graph.edges()) == []
    assert graph["noop[noop1]"].meta == Meta(noop=True)
    assert graph["exec[exec1]"].meta == Meta(noop=True)
    assert _exec(graph, "exec[exec1]").params.cmd == [
        "/bin/sh",
        "-c",
        "rm -rf /tmp/convergent-never-run",
    ]


def test_mgmt_files_load_with_paths_states_and_directories() -> None:
    pytest.importorskip("convergent.resources.file")
    graph = load_policy(DATA / "mgmt_files.yaml")
    assert list(graph) == [
        "noop[noop1]",
        "file[dir1]",
        "file[file1]",
        "file[file2]",
        "file[file3]",
        "file[/tmp/mgmt/f4]",
    ]
    assert _edges(graph) == [
        Edge("file[dir1]", "file[file1]"),
        Edge("file[file1]", "file[file2]"),
        Edge("file[file2]", "noop[noop1]", notify=True),
    ]
    params: dict[str, Any] = {vid: graph[vid].params for vid in graph if vid.startswith("file")}
    assert (str(params["file[dir1]"].path), params["file[dir1]"].state) == (
        "/tmp/mgmt",
        "directory",
    )
    assert (str(params["file[file1]"].path), params["file[file1]"].content) == (
        "/tmp/mgmt/f1",
        "i am f1\n",
    )
    assert params["file[file2]"].mode == "0600"
    assert params["file[file3]"].state == "absent"
    assert str(params["file[/tmp/mgmt/f4]"].path) == "/tmp/mgmt/f4"


def test_what_convergent_cannot_honour_is_each_named_at_its_line() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(DATA / "mgmt_unsupported.yaml")
    found = [(p.line, p.resource, p.message) for p in info.value.problems]
    expected = [
        (8, "exec[exec1]", "mgmt watchcmd: a watch command is not supported"),
        (11, "exec[exec2]", "mgmt user: running commands as another user is not supported"),
        (17, "exec[exec4]", "mgmt meta parameter 'realize' is not supported by convergent yet"),
        (18, None, "mgmt kind 'augeas' is not supported by convergent"),
        (21, None, "mgmt 'remote:' names the host this graph is for: `convergent run FILE`"),
        (27, None, "edge 'e1': no resource exec[exec9] in this policy"),
    ]
    assert len(found) == len(expected), "\n".join(str(p) for p in info.value.problems)
    for (line, resource, message), want in zip(found, expected, strict=True):
        assert (line, resource) == want[:2]
        assert message.startswith(want[2]), message


def _one(text: str) -> Problem:
    return the_problem(text, "graph.yaml")


def test_an_unknown_mgmt_parameter_suggests_the_closest_one() -> None:
    problem = _one("graph: g\nresources:\n  exec:\n  - name: e\n    cmd: ls\n    ifcmnd: ls\n")
    assert (problem.line, problem.column) == (6, 5)
    assert problem.message == "unknown mgmt exec parameter 'ifcmnd' (did you mean 'ifcmd'?)"


def test_an_unknown_yamlgraph_key_is_rejected() -> None:
    problem = _one("graph: g\nresources: {}\nedgse: []\n")
    assert problem.line == 3
    assert "unknown mgmt yamlgraph key 'edgse' (did you mean 'edges'?)" in problem.message


def test_a_graph_without_a_name_is_rejected() -> None:
    problem = _one("graph:\nresources: {}\n")
    assert problem.line == 1 and "'graph:' needs the graph's name" in problem.message


def test_an_mgmt_resource_without_a_name_is_rejected() -> None:
    problem = _one("graph: g\nresources:\n  noop:\n  - comment: nameless\n")
    assert problem.line == 4 and "needs a name" in problem.message


def test_an_mgmt_edge_end_that_is_missing_points_at_its_name() -> None:
    problem = _one(
        "graph: g\nresources:\n  noop:\n  - name: a\nedges:\n"
        "- name: e1\n  from: {kind: noop, name: a}\n  to: {kind: noop, name: b}\n"
    )
    assert (problem.line, problem.column) == (8, 26)
    assert (
        problem.message == "edge 'e1': no resource noop[b] in this policy (did you mean 'noop[a]'?)"
    )


def test_an_mgmt_edge_without_to_is_rejected() -> None:
    problem = _one(
        "graph: g\nresources:\n  noop:\n  - name: a\n"
        "edges:\n- name: e1\n  from: {kind: noop, name: a}\n"
    )
    assert problem.line == 6 and "edge 'e1': missing 'to:" in problem.message


def test_mgmt_args_with_a_shell_are_rejected_as_mgmt_does() -> None:
    problem = _one(
        "graph: g\nresources:\n  exec:\n  - name: e\n"
        "    cmd: ls\n    shell: /bin/sh\n    args: [-l]\n"
    )
    assert problem.line == 7 and "only with a cmd of one word and no shell" in problem.message


def test_mgmt_cycles_and_duplicates_are_rejected_like_ours() -> None:
    found = problems_of(
        "graph: g\nresources:\n  noop:\n  - name: a\n  - name: b\n  - name: a\nedges:\n"
        "- {name: e1, from: {kind: noop, name: a}, to: {kind: noop, name: b}}\n"
        "- {name: e2, from: {kind: noop, name: b}, to: {kind: noop, name: a}}\n",
        "graph.yaml",
    )
    assert [(p.line, p.message.split(";")[0]) for p in found] == [
        (4, "dependency cycle: noop[a] -> noop[b] -> noop[a]"),
        (6, "already defined at line 4, column 11"),
    ]


def test_other_known_kinds_take_their_parameters_as_they_are() -> None:
    graph = load(
        """
        graph: g
        resources:
          widget:
          - name: w1
            path: /srv/w1
            tags: [a]
        """
    )
    widget = graph["widget[w1]"]
    assert isinstance(widget, Widget) and widget.params.tags == ["a"]


def test_parameter_errors_point_at_the_mgmt_field() -> None:
    problem = _one("graph: g\nresources:\n  exec:\n  - name: e\n    cmd: ls\n    cwd: relative\n")
    assert (problem.line, problem.column) == (6, 10)
    assert problem.message.startswith("cwd: 'relative' is not an absolute path")


def test_renamed_parameters_are_reported_under_the_mgmt_name() -> None:
    problem = _one("graph: g\nresources:\n  exec:\n  - name: e\n    cmd: ls\n    ifcmd: ' '\n")
    assert (problem.line, problem.column) == (6, 12)
    assert problem.message.startswith("ifcmd: ")
