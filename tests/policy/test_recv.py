"""``recv:`` in a policy: an edge that carries an output into a parameter, checked at load
time (sender, output, parameter, types), every problem at its ``file:line:col``."""

from __future__ import annotations

from convergent.graph.core import Edge
from tests.policy.support import load, problems_of, the_problem


def test_recv_adds_an_edge_from_the_sender_that_carries_the_value() -> None:
    graph = load(
        """
        resources:
          - password: db
          - file: /srv/db.conf
            recv:
              content: password[db].password
        """
    )
    assert list(graph.edges()) == [
        Edge("password[db]", "file[/srv/db.conf]", notify=False, recv=(("content", "password"),))
    ]


def test_recv_joins_an_explicit_edge_between_the_same_resources() -> None:
    graph = load(
        """
        resources:
          - exec: gen
            cmd: [echo, hi]
            notify: file[/srv/out]
          - file: /srv/out
            mode: "0600"
            recv: {content: "exec[gen].stdout", mode: "exec[gen].stdout"}
        """
    )
    assert list(graph.edges()) == [
        Edge(
            "exec[gen]",
            "file[/srv/out]",
            notify=True,
            recv=(("content", "stdout"), ("mode", "stdout")),
        )
    ]


def test_a_str_output_into_an_int_parameter_names_both_sides_with_the_location() -> None:
    problem = the_problem(
        """
        resources:
          - exec: gen
            cmd: [echo, "3"]
          - widget: w
            path: /srv/w
            recv:
              count: exec[gen].stdout
        """
    )
    assert str(problem) == (
        "site.yaml:7:14: widget[w]: recv count: exec[gen].stdout is str, widget[w].count takes int"
    )


def test_an_int_output_may_go_into_a_float_parameter_not_into_a_str_one() -> None:
    load(
        """
        resources:
          - exec: gen
            cmd: [echo]
          - exec: use
            cmd: [echo]
            recv:
              timeout: exec[gen].exit_code
        """
    )
    problem = the_problem(
        """
        resources:
          - exec: gen
            cmd: [echo]
          - file: /srv/code
            recv:
              content: exec[gen].exit_code
        """
    )
    assert problem.message == (
        "recv content: exec[gen].exit_code is int, file[/srv/code].content takes str or null"
    )


def test_every_recv_problem_is_reported_at_its_place() -> None:
    found = problems_of(
        """
        resources:
          - password: db
          - noop: idle
          - file: /srv/f
            recv:
              content: password[dbb].password
              mode: password[db].pasword
              contnet: password[db].password
              group: noop[idle].out
              owner: password
              force: [a, b]
        """
    )
    assert [str(p) for p in found] == [
        "site.yaml:6:16: file[/srv/f]: recv content: no resource password[dbb] in this policy"
        " (did you mean 'password[db]'?)",
        "site.yaml:7:13: file[/srv/f]: recv mode: password[db] has no output 'pasword'"
        " (did you mean 'password'?); password sends: password",
        "site.yaml:8:7: file[/srv/f]: recv contnet: file[/srv/f] has no parameter 'contnet'"
        " (did you mean 'content'?); file takes: path, content, source, state, target, mode,"
        " owner, group, force, parents, follow, recurse, purge, replace, backup, validate",
        "site.yaml:9:14: file[/srv/f]: recv group: noop[idle] sends nothing (noop has no outputs)",
        "site.yaml:10:14: file[/srv/f]: recv owner: 'password' is not an output reference;"
        " write kind[name].output, e.g. password[db].password",
        "site.yaml:11:14: file[/srv/f]: recv force: expected an output reference"
        " kind[name].output, got a list",
    ]


def test_recv_must_be_a_mapping() -> None:
    problem = the_problem(
        """
        resources:
          - password: db
          - file: /srv/f
            recv: password[db].password
        """
    )
    assert (problem.line, problem.column) == (4, 11)
    assert problem.message.startswith("recv: expected a mapping of parameters to outputs")


def test_a_recv_cycle_is_a_cycle() -> None:
    problem = the_problem(
        """
        resources:
          - exec: a
            cmd: [echo]
            recv:
              cwd: exec[b].stdout
          - exec: b
            cmd: [echo]
            recv:
              cwd: exec[a].stdout
        """
    )
    assert "dependency cycle: exec[a] -> exec[b] -> exec[a]" in problem.message
