"""Meta parameters in policies: every bad combination is rejected at load time, at its line.

Loading reads nothing on the host and changes nothing: each rejected policy here names
a file in ``tmp_path`` that must still not exist afterwards.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from convergent.errors import PolicyError, Problem
from convergent.policy import load_policy_text
from convergent.resources.base import Meta


def _rejected(tmp_path: Path, meta: str, filename: str = "site.yaml") -> Problem:
    """The one problem of a policy whose file resource has the ``meta:`` block ``meta``."""
    target = tmp_path / "motd"
    text = f"resources:\n  - file: {target}\n    content: hello\n    meta:\n" + textwrap.indent(
        textwrap.dedent(meta), "      "
    )
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, filename)
    assert not target.exists() and sorted(tmp_path.iterdir()) == []  # the host is unchanged
    (problem,) = info.value.problems
    assert problem.file == filename
    assert problem.resource == f"file[{target}]"
    return problem


@pytest.mark.parametrize(
    ("meta", "line", "message"),
    [
        (
            "limit: 5\n",
            5,
            "meta.limit: a limit of 5 per second with burst 0 could never run; "
            "add burst: 1 (or more)",
        ),
        ("limit: 0\nburst: 1\n", 5, "meta.limit: runs per second must be more than 0"),
        ("burst: -1\n", 5, "meta.burst: must be 0 or more, not -1"),
        ("retry: -2\n", 5, "meta.retry: give -1 (forever), 0 (no retry) or a number"),
        ("delay: -0.5\n", 5, "meta.delay: must be 0 or a number of seconds > 0, not -0.5"),
        ("poll: -1\n", 5, "meta.poll: must be 0 or a number of seconds > 0, not -1"),
        ("jitter: 1.5\n", 5, "meta.jitter: a fraction from 0 to 1"),
        ("timeout: 0\n", 5, "meta.timeout: must be a number of seconds > 0"),
        ("max_delay: 0\n", 5, "meta.max_delay: must be a number of seconds > 0, not 0"),
        (
            "retry: 3\nbackoff: exponential\n",
            6,
            "meta.backoff: exponential backoff grows from the delay: set a delay > 0",
        ),
        (
            "delay: 10\nbackoff: exponential\nmax_delay: 5\n",
            7,
            "meta.max_delay: 5 is shorter than the delay (10)",
        ),
        ("backoff: linear\n", 5, "meta.backoff: must be one of 'none', 'exponential'"),
        ("sema: [db, 'db:0']\n", 5, "meta.sema[1]: 'db:0': a semaphore's size must be 1 or more"),
        ("sema:\n  - db\n  - db:2\n", 7, "meta.sema[1]: 'db:2': semaphore 'db' is listed twice"),
        ("sema: [':3']\n", 5, "meta.sema[0]: ':3': a semaphore needs an id"),
        ("sema: db\n", 5, "meta.sema: expected list, got str"),
        ("retry: true\n", 5, "meta.retry: expected int, got bool"),
    ],
)
def test_a_bad_meta_value_is_rejected_at_its_line(
    tmp_path: Path, meta: str, line: int, message: str
) -> None:
    problem = _rejected(tmp_path, meta)
    assert problem.line == line, problem
    assert problem.message.startswith(message), problem.message


def test_a_problem_in_a_sema_list_points_at_the_item(tmp_path: Path) -> None:
    problem = _rejected(tmp_path, "sema: [a, b, 'c:0']\n")
    assert (problem.line, problem.column) == (5, 20)


def test_one_semaphore_with_two_sizes_is_rejected_naming_both_resources(tmp_path: Path) -> None:
    text = textwrap.dedent(
        f"""\
        resources:
          - noop: a
            meta: {{sema: ["db:2"]}}
          - file: {tmp_path / "f"}
            content: x
            meta:
              sema:
                - other
                - db
        """
    )
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "site.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.resource) == (9, 11, f"file[{tmp_path / 'f'}]")
    assert problem.message == (
        "meta.sema[1]: semaphore 'db' has size 1 here but 2 in noop[a] (line 3); "
        "give it the same size everywhere"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_every_resource_with_bad_meta_is_reported_at_once() -> None:
    text = "resources:\n  - noop: a\n    meta: {limit: 1}\n  - noop: b\n    meta: {retry: -5}\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "site.yaml")
    found = [(p.line, p.resource, p.message.split(":")[0]) for p in info.value.problems]
    assert found == [(3, "noop[a]", "meta.limit"), (5, "noop[b]", "meta.retry")]


def test_every_meta_parameter_reaches_the_resource() -> None:
    text = textwrap.dedent(
        """\
        resources:
          - noop: a
            meta:
              noop: true
              retry: -1
              delay: 0.5
              backoff: exponential
              max_delay: 30
              jitter: 0.1
              poll: 10
              limit: 2.5
              burst: 3
              sema: [db, "io:4"]
              autoedge: false
              autogroup: false
              rewatch: true
              reverse: true
              timeout: 60
        """
    )
    meta = load_policy_text(text)["noop[a]"].meta
    assert meta == Meta(
        noop=True,
        retry=-1,
        delay=0.5,
        backoff="exponential",
        max_delay=30,
        jitter=0.1,
        poll=10,
        limit=2.5,
        burst=3,
        sema=["db", "io:4"],
        autoedge=False,
        autogroup=False,
        rewatch=True,
        reverse=True,
        timeout=60,
    )
    assert meta.semaphores() == [("db", 1), ("io", 4)]


def test_meta_defaults_change_nothing() -> None:
    meta = Meta()
    assert (meta.retry, meta.delay, meta.poll, meta.timeout, meta.sema) == (0, 0, 0, None, [])
    assert meta.limit == float("inf") and meta.burst == 0
    assert meta.autoedge and meta.autogroup and not meta.rewatch and not meta.reverse


def test_mgmt_meta_is_converted_to_seconds_and_kept() -> None:
    text = textwrap.dedent(
        """\
        graph: g
        resources:
          noop:
          - name: a
            meta:
              retry: 5
              retryreset: true
              delay: 1500
              timeout: 0
              poll: 30
              limit: 4
              burst: 2
              sema: ["db:2"]
              rewatch: true
          - name: b
            meta:
              timeout: 2500
        """
    )
    graph = load_policy_text(text, "graph.yaml")
    assert graph["noop[a]"].meta == Meta(
        retry=5, delay=1.5, poll=30, limit=4, burst=2, sema=["db:2"], rewatch=True
    )
    assert graph["noop[b]"].meta == Meta(timeout=2.5)


def test_a_bad_mgmt_meta_combination_is_rejected_at_its_line() -> None:
    text = "graph: g\nresources:\n  noop:\n  - name: a\n    meta:\n      limit: 3\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "graph.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.resource) == ("graph.yaml", 6, "noop[a]")
    assert problem.message.startswith("meta.limit: a limit of 3 per second with burst 0")


def test_an_empty_mgmt_meta_value_means_not_set() -> None:
    text = "graph: g\nresources:\n  noop:\n  - name: a\n    meta:\n      sema:\n      delay:\n"
    assert load_policy_text(text, "graph.yaml")["noop[a]"].meta == Meta()
