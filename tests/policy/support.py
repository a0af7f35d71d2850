"""A kind defined for the policy tests, and helpers to load text and read problems."""

from __future__ import annotations

import textwrap
from typing import Any, Literal

import msgspec
import pytest

from convergent.errors import ParamError, PolicyError, Problem
from convergent.graph.core import Graph
from convergent.policy import load_policy_text
from convergent.resources.base import Change, Context, Params, Resource

__all__ = ["Widget", "WidgetParams", "load", "problems_of", "the_problem"]


class Size(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A size.

    width: in millimetres
    height: in millimetres
    """

    width: int
    height: int = 0


class WidgetParams(Params, frozen=True):
    """Parameters of ``widget``, a kind that only the policy tests use.

    path: absolute path the widget is about
    label: a text label
    count: how many
    state: what the widget should be
    tags: labels attached to it
    size: its size
    """

    path: str
    label: str | None = None
    count: int = 0
    state: Literal["on", "off"] = "on"
    tags: list[str] = []
    size: Size | None = None


class Widget(Resource[WidgetParams], kind="widget"):
    """A kind for the policy tests: never touches anything."""

    def validate(self) -> None:
        if not self.params.path.startswith("/"):
            raise ParamError("path", f"{self.params.path!r} is not absolute; write it from /")
        for i, tag in enumerate(self.params.tags):
            if not tag:
                raise ParamError(f"tags[{i}]", "a tag cannot be empty")

    async def check(self, ctx: Context) -> Change | None:
        return None

    async def apply(self, ctx: Context, change: Change) -> str | None:
        return None


def load(text: str, filename: str = "site.yaml") -> Graph[Resource[Any]]:
    """Load a policy written as an indented triple-quoted string."""
    return load_policy_text(textwrap.dedent(text).lstrip("\n"), filename)


def problems_of(text: str, filename: str = "site.yaml") -> list[Problem]:
    """The problems a policy is rejected with (fails the test if it loads)."""
    with pytest.raises(PolicyError) as info:
        load(text, filename)
    assert info.value.problems, "a PolicyError must carry its problems"
    return info.value.problems


def the_problem(text: str, filename: str = "site.yaml") -> Problem:
    """The one problem a policy is rejected with."""
    found = problems_of(text, filename)
    assert len(found) == 1, "\n".join(str(p) for p in found)
    return found[0]
