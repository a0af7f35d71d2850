"""The YAML policy loader: good policies become graphs; bad ones are explained, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from convergent.errors import PolicyError
from convergent.graph.core import Edge
from convergent.policy import load_policy, load_policy_text
from convergent.resources.base import Meta
from tests.policy.support import Widget, load, problems_of, the_problem

# -- good policies ---------------------------------------------------------------------


def test_resources_are_added_in_policy_order_with_their_edges() -> None:
    graph = load(
        """
        resources:
          - widget: w1
            path: /srv/w1
          - exec: build
            cmd: [touch, /srv/built]
            require: [widget[w1]]
            notify: [noop[done]]
            before: noop[last]
          - noop: done
          - noop: last
        """
    )
    assert list(graph) == ["widget[w1]", "exec[build]", "noop[done]", "noop[last]"]
    assert sorted(graph.edges(), key=lambda e: (e.source, e.target)) == [
        Edge("exec[build]", "noop[done]", notify=True),
        Edge("exec[build]", "noop[last]", notify=False),
        Edge("widget[w1]", "exec[build]", notify=False),
    ]


def test_parameters_and_meta_reach_the_resource() -> None:
    graph = load(
        """
        resources:
          - widget: w1
            path: /srv/w1
            count: 3
            state: "off"
            tags: [a, b]
            size: {width: 10}
            meta: {noop: true}
        """
    )
    widget = graph["widget[w1]"]
    assert isinstance(widget, Widget)
    assert widget.params.count == 3 and widget.params.state == "off"
    assert widget.params.tags == ["a", "b"] and widget.params.size is not None
    assert widget.params.size.width == 10
    assert widget.meta == Meta(noop=True)


def test_references_may_be_one_string_a_block_list_or_a_flow_list() -> None:
    graph = load(
        """
        resources:
          - noop: a
          - noop: b
          - noop: c
            require: noop[a]
          - noop: d
            require:
              - noop[a]
              - noop[b]
          - noop: e
            require: [noop[a], "noop[b]",  noop[c]]   # a comment [with brackets]
        """
    )
    assert sorted(graph.upstream("noop[c]")) == ["noop[a]"]
    assert sorted(graph.upstream("noop[d]")) == ["noop[a]", "noop[b]"]
    assert sorted(graph.upstream("noop[e]")) == ["noop[a]", "noop[b]", "noop[c]"]


def test_a_reference_name_may_hold_brackets_and_slashes() -> None:
    graph = load(
        """
        resources:
          - widget: "/srv/a[1]"
            path: /srv/a
          - noop: b
            require: [widget[/srv/a[1]]]
        """
    )
    assert graph.upstream("noop[b]") == ["widget[/srv/a[1]]"]


def test_notify_and_require_of_the_same_pair_make_one_notifying_edge() -> None:
    graph = load(
        """
        resources:
          - noop: a
            notify: noop[b]
          - noop: b
            require: noop[a]
        """
    )
    assert list(graph.edges()) == [Edge("noop[a]", "noop[b]", notify=True)]


def test_an_empty_list_of_resources_is_an_empty_policy() -> None:
    assert len(load("resources: []\n")) == 0


def test_anchors_aliases_and_merge_keys_are_honoured() -> None:
    graph = load(
        """
        resources:
          - widget: w1
            path: /srv/w1
            tags: &tags [x, y]
            size: &size {width: 4, height: 2}
          - widget: w2
            path: /srv/w2
            tags: *tags
            size:
              <<: *size
              height: 9
        """
    )
    w2 = graph["widget[w2]"]
    assert isinstance(w2, Widget) and w2.params.size is not None
    assert w2.params.tags == ["x", "y"]
    assert (w2.params.size.width, w2.params.size.height) == (4, 9)


def test_load_policy_reads_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text("resources:\n  - noop: done\n", encoding="utf-8")
    assert list(load_policy(policy)) == ["noop[done]"]


# -- rejected: the document as a whole ----------------------------------------------------


def test_yaml_syntax_error_is_located_and_explained() -> None:
    problem = the_problem(
        """
        resources:
          - widget: w1
            label: "never closed
        """
    )
    assert (problem.file, problem.line) == ("site.yaml", 3)
    assert "YAML syntax error" in problem.message and "close the quote" in problem.message


def test_tab_indentation_says_to_use_spaces() -> None:
    problem = the_problem("resources:\n\t- noop: a\n")
    assert (problem.line, problem.column) == (2, 1)
    assert "indent with spaces" in problem.message


def test_a_second_yaml_document_is_rejected() -> None:
    problem = the_problem("resources: []\n---\nresources: []\n")
    assert problem.line == 2 and "remove the second '---'" in problem.message


def test_an_empty_file_says_what_to_write() -> None:
    for text in ("", "\n", "# only a comment\n"):
        with pytest.raises(PolicyError) as info:
            load_policy_text(text, "empty.yaml")
        (problem,) = info.value.problems
        assert (problem.file, problem.line, problem.column) == ("empty.yaml", 1, 1)
        assert "the policy is empty" in problem.message
        assert "resources: []" in problem.message


def test_resources_without_a_value_says_to_write_an_empty_list() -> None:
    problem = the_problem("resources:\n")
    assert problem.line == 1 and "write 'resources: []'" in problem.message


def test_a_top_level_that_is_not_a_mapping_is_rejected() -> None:
    problem = the_problem("- noop: a\n")
    assert (problem.line, problem.column) == (1, 1)
    assert "top level of a policy is a mapping with a 'resources:' list" in problem.message


def test_a_policy_without_resources_key_is_rejected() -> None:
    found = problems_of("resource:\n  - noop: a\n")
    messages = [p.message for p in found]
    assert any(
        "unknown top-level key 'resource' (did you mean 'resources'?)" in m for m in messages
    )
    assert any("the policy has no 'resources:' key" in m for m in messages)


def test_an_unknown_top_level_key_is_rejected_at_the_key() -> None:
    problem = the_problem("resources: []\nvariables: {}\n")
    assert (problem.line, problem.column) == (2, 1)
    assert "unknown top-level key 'variables'" in problem.message


def test_resources_as_a_mapping_points_to_the_mgmt_format() -> None:
    problem = the_problem("resources:\n  noop: [{name: a}]\n")
    assert problem.line == 2 and "add 'graph: NAME'" in problem.message


def test_a_duplicate_yaml_key_is_rejected_at_the_second() -> None:
    problem = the_problem(
        """
        resources:
          - widget: w1
            path: /srv/a
            path: /srv/b
        """
    )
    assert (problem.line, problem.column) == (4, 5)
    assert "duplicate key 'path' (first at line 3)" in problem.message


def test_a_file_that_is_not_utf8_is_rejected_with_its_location(tmp_path: Path) -> None:
    policy = tmp_path / "latin1.yaml"
    policy.write_bytes("resources:\n  - noop: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PolicyError) as info:
        load_policy(policy)
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (2, 14)
    assert "not UTF-8" in problem.message


# -- rejected: entries ------------------------------------------------------------------


def test_an_entry_that_is_not_a_mapping_is_rejected() -> None:
    problem = the_problem("resources:\n  - noop[a]\n")
    assert (problem.line, problem.column) == (2, 5)
    assert "a resource entry is a mapping whose first key is its kind" in problem.message


def test_an_unknown_kind_suggests_the_closest_one() -> None:
    problem = the_problem("resources:\n  - widgte: w1\n    path: /srv/w1\n")
    assert (problem.line, problem.column) == (2, 5)
    assert problem.resource == "widgte[w1]"
    assert "unknown resource kind 'widgte' (did you mean 'widget'?)" in problem.message
    assert "known kinds:" in problem.message


def test_a_kind_that_is_not_the_first_key_is_pointed_out() -> None:
    problem = the_problem("resources:\n  - path: /srv/w1\n    widget: w1\n")
    assert (problem.line, problem.column) == (2, 5)
    assert "move 'widget: ...' to the top of this entry" in problem.message


def test_a_mapping_as_name_explains_the_entry_shape() -> None:
    problem = the_problem("resources:\n  - widget:\n      path: /srv/w1\n")
    assert (problem.line, problem.column) == (3, 7)
    assert "the value of 'widget:' is the resource's name" in problem.message


def test_a_missing_name_is_rejected() -> None:
    problem = the_problem("resources:\n  - noop:\n")
    assert (problem.line, problem.column) == (2, 5)
    assert "needs a name" in problem.message


def test_an_unknown_parameter_suggests_the_closest_one() -> None:
    problem = the_problem(
        """
        resources:
          - exec: build
            comand: [make]
        """
    )
    assert str(problem) == (
        "site.yaml:3:5: exec[build]: unknown parameter 'comand' (did you mean 'cmd'?)"
    )


def test_an_unknown_parameter_without_a_close_one_lists_the_parameters() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    zzz: 1\n")
    assert problem.line == 4
    assert "widget takes: path, label, count, state, tags, size" in problem.message


def test_a_wrong_type_points_at_the_value_and_names_the_expected_type() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    count: many\n")
    assert (problem.line, problem.column) == (4, 12)
    assert problem.resource == "widget[w1]"
    assert problem.message == "count: expected int, got str"


def test_a_number_where_text_is_expected_says_to_quote_it() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    label: 0755\n")
    assert (problem.line, problem.column) == (4, 12)
    assert (
        problem.message
        == 'label: expected str or null, got int; quote it to keep it as text: "0755"'
    )


def test_a_wrong_type_inside_a_list_points_at_the_item() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    tags: [a, 2, c]\n")
    assert (problem.line, problem.column) == (4, 15)
    assert problem.message.startswith("tags[1]: expected str, got int")


def test_a_value_outside_a_literal_lists_the_allowed_values() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    state: dim\n")
    assert (problem.line, problem.column) == (4, 12)
    assert problem.message == "state: must be one of 'on', 'off', got 'dim'"


def test_a_missing_nested_field_points_at_the_mapping() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: /a\n    size: {height: 1}\n")
    assert (problem.line, problem.column) == (4, 11)
    assert problem.message == "size.width: required parameter is missing"


def test_a_missing_required_parameter_points_at_the_resource() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    count: 1\n")
    assert (problem.line, problem.column) == (2, 13)
    assert problem.message == "missing required parameter 'path'"


def test_every_wrong_type_of_a_resource_is_reported() -> None:
    found = problems_of(
        "resources:\n  - widget: w1\n    path: /a\n    count: x\n    tags: 3\n    label: [1]\n"
    )
    assert [(p.line, p.message.split(":")[0]) for p in found] == [
        (4, "count"),
        (5, "tags"),
        (6, "label"),
    ]


def test_a_value_validate_rejects_points_at_the_field_it_names() -> None:
    problem = the_problem("resources:\n  - widget: w1\n    path: relative/p\n")
    assert (problem.line, problem.column) == (3, 11)
    assert problem.message == "path: 'relative/p' is not absolute; write it from /"


def test_a_validate_error_inside_a_list_points_at_the_item() -> None:
    problem = the_problem(
        "resources:\n  - widget: w1\n    path: /a\n    tags:\n      - ok\n      - ''\n"
    )
    assert (problem.line, problem.column) == (6, 9)
    assert problem.message == "tags[1]: a tag cannot be empty"


def test_an_unknown_meta_parameter_suggests_the_closest_one() -> None:
    problem = the_problem("resources:\n  - noop: a\n    meta: {nop: true}\n")
    assert (problem.line, problem.column) == (3, 12)
    assert "unknown meta parameter 'nop' (did you mean 'noop'?)" in problem.message


def test_a_wrong_meta_type_points_at_the_value() -> None:
    problem = the_problem("resources:\n  - noop: a\n    meta:\n      noop: 5\n")
    assert (problem.line, problem.column) == (4, 13)
    assert problem.message == "meta.noop: expected bool, got int"


# -- rejected: references, identities, cycles ------------------------------------------------


def test_a_malformed_reference_says_to_write_kind_name() -> None:
    problem = the_problem("resources:\n  - noop: a\n  - noop: b\n    require: noop/a\n")
    assert (problem.line, problem.column) == (4, 14)
    assert problem.resource == "noop[b]"
    assert "require: 'noop/a' is not a reference; write kind[name]" in problem.message


def test_a_reference_that_is_not_text_is_rejected() -> None:
    problem = the_problem("resources:\n  - noop: a\n    notify: {noop: b}\n")
    assert problem.line == 3
    assert "notify: expected a reference kind[name] or a list of them" in problem.message


def test_a_reference_to_a_missing_resource_suggests_an_existing_one() -> None:
    problem = the_problem(
        """
        resources:
          - noop: done
          - noop: build
            notify: [noop[dome]]
        """
    )
    assert (problem.line, problem.column) == (4, 14)
    assert problem.resource == "noop[build]"
    assert problem.message == (
        "notify: no resource noop[dome] in this policy (did you mean 'noop[done]'?)"
    )


def test_a_flow_list_reference_error_keeps_its_column() -> None:
    problem = the_problem(
        "resources:\n  - noop: b\n  - noop: a\n    require: [noop[b], noop[zz]]\n"
    )
    assert (problem.line, problem.column) == (4, 24)
    assert "no resource noop[zz]" in problem.message


def test_a_duplicate_identity_points_at_the_second_and_says_where_the_first_is() -> None:
    problem = the_problem("resources:\n  - noop: a\n  - noop: b\n  - noop: a\n")
    assert (problem.line, problem.column) == (4, 11)
    assert problem.resource == "noop[a]"
    assert problem.message.startswith("already defined at line 2, column 11;")


def test_a_cycle_is_named_in_full_at_one_of_its_resources() -> None:
    problem = the_problem(
        """
        resources:
          - widget: /a
            path: /a
            require: exec[b]
          - exec: b
            cmd: ["true"]
            require: noop[c]
          - noop: c
            require: widget[/a]
        """
    )
    assert problem.message.startswith(
        "dependency cycle: widget[/a] -> noop[c] -> exec[b] -> widget[/a]"
    ) or problem.message.startswith("dependency cycle: exec[b] -> noop[c] -> widget[/a] -> exec[b]")
    assert (problem.line, problem.column) == (2, 13)
    assert problem.resource == "widget[/a]"
    assert "remove one of these require/before/notify edges" in problem.message


def test_a_cycle_follows_edge_direction() -> None:
    problem = the_problem(
        "resources:\n  - noop: a\n    before: noop[b]\n  - noop: b\n    before: noop[a]\n"
    )
    assert problem.message.startswith("dependency cycle: noop[a] -> noop[b] -> noop[a];")


def test_a_resource_requiring_itself_is_a_cycle() -> None:
    problem = the_problem("resources:\n  - noop: a\n    require: noop[a]\n")
    assert problem.message.startswith("dependency cycle: noop[a] -> noop[a];")


def test_separate_cycles_are_all_reported() -> None:
    found = problems_of(
        """
        resources:
          - noop: a
            require: noop[b]
          - noop: b
            require: noop[a]
          - noop: c
            require: noop[d]
          - noop: d
            require: noop[c]
        """
    )
    assert [p.resource for p in found] == ["noop[a]", "noop[c]"]


# -- all at once, and nothing touched -----------------------------------------------------


def test_every_problem_is_reported_together_in_file_order() -> None:
    found = problems_of(
        """
        resources:
          - exec: build
            comand: [make]
          - widget: w1
            path: relative
          - noop: a
            require: noop[missing]
          - noop: a
          - nope: x
        extra: 1
        """
    )
    assert [(p.line, p.column) for p in found] == [
        (3, 5),
        (5, 11),
        (7, 14),
        (8, 11),
        (9, 5),
        (10, 1),
    ]
    text = str(PolicyError(found))
    assert text.count("\n") == 5 and text.startswith(
        "site.yaml:3:5: exec[build]: unknown parameter"
    )


def test_loading_never_touches_the_host(tmp_path: Path) -> None:
    target = tmp_path / "made-by-exec"
    policy = tmp_path / "site.yaml"
    policy.write_text(
        f"""
resources:
  - exec: make
    cmd: [touch, {target}]
    creates: {target}
    cwd: {tmp_path}
  - widget: w1
    path: {tmp_path}/w1
    require: exec[make]
""",
        encoding="utf-8",
    )
    before = sorted(tmp_path.iterdir())
    graph = load_policy(policy)
    assert list(graph) == ["exec[make]", "widget[w1]"]
    assert sorted(tmp_path.iterdir()) == before


def test_loading_files_creates_and_changes_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_text("old\n", encoding="utf-8")
    existing.chmod(0o600)
    graph = load(
        f"""
        resources:
          - file: {tmp_path}/dir
            state: directory
          - file: {tmp_path}/dir/f1
            content: "i am f1\\n"
            mode: "0644"
            require: [file[{tmp_path}/dir]]
          - file: {existing}
            content: "new\\n"
            mode: "0644"
          - file: {tmp_path}/gone
            state: absent
        """
    )
    assert len(graph) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert existing.read_text(encoding="utf-8") == "old\n"
    assert existing.stat().st_mode & 0o777 == 0o600


def test_an_unquoted_octal_mode_says_to_quote_it() -> None:
    problem = the_problem("resources:\n  - file: /tmp/x\n    mode: 0644\n")
    assert (problem.line, problem.column) == (3, 11)
    assert problem.resource == "file[/tmp/x]"
    assert problem.message.endswith('quote it to keep it as text: "0644"')


def test_the_shipped_examples_load() -> None:
    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    assert examples, "examples/ holds the policies a new user runs first"
    for example in examples:
        assert len(load_policy(example)) > 0, example


def test_an_exec_guard_error_points_at_the_item_inside_ifnewer() -> None:
    problem = the_problem(
        """
        resources:
          - exec: build
            cmd: [make]
            ifnewer:
              target: /srv/out
              sources: [/srv/a, src/b]
        """
    )
    assert (problem.line, problem.column) == (6, 25)
    assert problem.resource == "exec[build]"
    assert problem.message.startswith("ifnewer.sources[1]: 'src/b' is not an absolute path")
