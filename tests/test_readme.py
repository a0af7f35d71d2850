"""The README's policy reference is the generated one, so it cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from convergent.policy.reference import render_reference
from convergent.resources.base import builtin_kinds

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- reference:start -->\n", "<!-- reference:end -->"


def _generated() -> str:
    # The reference's headings sit two levels down inside the README's "Writing policies".
    text = re.sub(r"^(#+) ", r"##\1 ", render_reference(builtin_kinds()), flags=re.MULTILINE)
    return text.strip() + "\n"


def test_readme_reference_matches_the_parameter_types() -> None:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README lost its reference markers"
    current = text.split(START, 1)[1].split(END, 1)[0]
    assert current == _generated(), (
        "README's policy reference is out of date: run `python tests/test_readme.py` to refresh it"
    )


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    README.write_text(head + START + _generated() + END + rest.split(END, 1)[1], encoding="utf-8")
