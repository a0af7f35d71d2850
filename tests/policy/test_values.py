"""Values converts each YAML node once: a node dropped during the load (a rendered
template's) whose id comes back on another node never lends that node its value."""

from __future__ import annotations

from yaml.error import Mark
from yaml.nodes import ScalarNode, SequenceNode

from convergent.policy.entries import Problems
from convergent.policy.nodes import SEQ, STR, Values

AT = Mark("policy.yaml", 0, 0, 0, None, None)


def _list(*words: str) -> SequenceNode:
    return SequenceNode(SEQ, [ScalarNode(STR, w, AT, AT) for w in words], AT, AT)


def test_a_value_is_never_taken_from_a_dropped_node_whose_id_came_back() -> None:
    """CPython gives a freed block to the next object of its size, so a cache by id alone
    answered the second list with the first's value (seen as a bundle parameter that got
    another template's value, in about one load in ten of examples/site)."""
    values = Values(Problems("policy.yaml"), masked=False)
    for _ in range(200):
        first = _list("port", "title")
        assert values.value(first) == ["port", "title"]
        del first  # as a rendered template's node is, once its value is read
        second = _list("alice", "bob")
        assert values.value(second) == ["alice", "bob"]
