"""The policy reference documents every key, every meta parameter and every parameter."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec

from convergent.policy.reference import field_docs, render_reference
from convergent.resources.base import Meta, get_kind, kinds
from tests.policy.support import Widget


def _undocumented(struct_type: type[Any], prefix: str = "") -> list[str]:
    docs = field_docs(struct_type)
    missing: list[str] = []
    for field in msgspec.structs.fields(struct_type):
        if not docs.get(field.name):
            missing.append(prefix + field.name)
        for inner in _structs(field.type):
            missing += _undocumented(inner, f"{prefix}{field.name}.")
    return missing


def _structs(hint: Any) -> list[type[msgspec.Struct]]:
    args = getattr(hint, "__args__", (hint,))
    return [a for a in args if isinstance(a, type) and issubclass(a, msgspec.Struct)]


def test_every_parameter_of_every_kind_has_a_description() -> None:
    missing: list[str] = []
    for kind in kinds():
        cls = get_kind(kind)
        assert cls is not None
        missing += [f"{kind}.{name}" for name in _undocumented(cls.params_type)]
    assert missing == [], f"document these in the Params docstring ('name: text'): {missing}"


def test_an_undocumented_field_is_noticed() -> None:
    class Half(msgspec.Struct):
        """Half documented.

        a: documented
        """

        a: int
        b: int

    assert _undocumented(Half) == ["b"]


def test_the_reference_has_every_key_kind_and_parameter() -> None:
    text = render_reference()
    for key in ("`require`", "`before`", "`notify`", "`meta`"):
        assert key in text
    for field in msgspec.structs.fields(Meta):
        assert f"| `{field.name}` |" in text
    for kind in kinds():
        cls = get_kind(kind)
        assert cls is not None
        assert f"\n### {kind}\n" in text
        for name in cls.params_type.__struct_fields__:
            assert f"| `{name}` |" in text
    assert "(undocumented)" not in text


def test_a_parameter_row_gives_type_default_and_description() -> None:
    text = render_reference()
    assert Widget.kind == "widget"
    assert '| `state` | "on" or "off" | `"on"` | what the widget should be |' in text
    assert "| `path` | str | required | absolute path the widget is about |" in text
    assert "| `size.width` | int | required | in millimetres |" in text


def test_python_m_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convergent.policy.reference"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Policy reference")
    assert "\n### exec\n" in done.stdout and "\n### file\n" in done.stdout
