"""``convergent doc [KIND]``: a kind's reference in the terminal (``convergent doc`` lists them).

The text is the policy reference's (:func:`convergent.policy.reference.render_reference`,
the one the README holds), laid out for a terminal: a kind's summary, then one block per
parameter with its type, default and meaning. ``convergent doc meta`` shows the meta
parameters every kind takes. The man page (:mod:`convergent.cli.man`) reads the same
sections through :func:`reference_sections`.
"""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import argparse

__all__ = ["Row", "Section", "doc_command", "kind_text", "reference_sections"]

_CELL = re.compile(r"(?<!\\)\|")


class Row(NamedTuple):
    """One parameter of a kind, as the reference's table gives it (markup removed)."""

    name: str
    type: str
    default: str
    description: str


class Section(NamedTuple):
    """A kind's reference (or ``meta``'s): its summary and parameter rows."""

    name: str
    summary: str
    rows: list[Row]


def _plain(text: str) -> str:
    return text.replace("\\|", "|").replace("`", "").strip()


def _section(name: str, lines: list[str]) -> Section:
    summary: list[str] = []
    rows: list[Row] = []
    for line in lines:
        if line.startswith("|"):
            cells = [_plain(c) for c in _CELL.split(line.strip())[1:-1]]
            if len(cells) == 4 and cells[0] not in ("name", "---"):
                rows.append(Row(*cells))
        elif line.strip() and not rows:
            summary.append(_plain(line))
    return Section(name, " ".join(summary), rows)


def reference_sections(only: list[str] | None = None) -> dict[str, Section]:
    """``meta`` and every kind (or those in ``only``), read from the policy reference."""
    from convergent.policy.reference import render_reference

    text = render_reference(only)
    sections: dict[str, Section] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "## end"]:
        heading = re.match(r"^(##|###) (.+)$", line)
        if heading is None:
            lines.append(line)
            continue
        if name is not None:
            sections[name] = _section(name, lines)
        title = heading.group(2)
        name = title if title == "meta" or heading.group(1) == "###" else None
        lines = []
    return sections


def kind_text(section: Section, width: int = 80) -> str:
    """A section laid out for a terminal ``width`` columns wide."""
    wrap = max(width, 40) - 8
    out = [section.name.upper(), ""]
    summary = section.summary or "Meta parameters: what the engine does for every kind."
    out += textwrap.wrap(summary, wrap, initial_indent="  ", subsequent_indent="  ")
    out += ["", "PARAMETERS" if section.name != "meta" else "META PARAMETERS (meta: {...})", ""]
    if not section.rows:
        out.append("  none")
    for row in section.rows:
        default = row.default
        if default not in ("required", "not set"):
            default = f"default {default}"
        out.append(f"  {row.name}  ({row.type}; {default})")
        out += textwrap.wrap(
            row.description, wrap, initial_indent="      ", subsequent_indent="      "
        )
    if section.name != "meta":
        from convergent.policy.entries import ENTRY_KEYS

        keys = ", ".join(key.name for key in ENTRY_KEYS)
        out += ["", f"Every entry also takes {keys} (convergent doc meta: the meta block)."]
    return "\n".join(out) + "\n"


def doc_command(args: argparse.Namespace) -> int:
    """Print one kind's reference, or list the kinds; 2 for a kind nobody provides."""
    from convergent.render import say
    from convergent.resources.base import get_kind, kinds

    width = shutil.get_terminal_size((80, 24)).columns
    if args.kind is None:
        sections = reference_sections()
        lines = ["Kinds (convergent doc KIND for one; convergent doc meta for meta):", ""]
        for name in kinds():
            if name in sections:
                summary = sections[name].summary.removeprefix(f"{name}: ")
                lines += textwrap.wrap(
                    summary,
                    max(width, 40),
                    initial_indent=f"  {name:10} ",
                    subsequent_indent=" " * 13,
                )
        sys.stdout.write("\n".join(lines) + "\n")
        return 0
    if args.kind != "meta" and get_kind(args.kind) is None:
        from convergent.policy.suggest import close_match
        from convergent.resources.base import unknown_kind

        hint = close_match(args.kind, kinds())
        why = unknown_kind(args.kind, typo=bool(hint))
        say(f"convergent doc: no kind '{args.kind}'{hint}" + (f"; {why}" if why else ""))
        say("convergent doc (without KIND) lists the kinds")
        return 2
    section = reference_sections([] if args.kind == "meta" else [args.kind])[args.kind]
    sys.stdout.write(kind_text(section, width))
    return 0
