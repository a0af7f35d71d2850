"""``convergent man``: the convergent(1) manual page, generated from the parser and the reference.

Every command with its usage, description and options comes from
:func:`convergent.cli.main.build_parser`; every kind and the meta parameters from the
policy reference (:func:`convergent.cli.doc.reference_sections`), so the page says what
``--help`` and the README say. ``make install`` writes it to
``$(PREFIX)/share/man/man1/convergent.1``; ``convergent man | man -l -`` reads it now.
"""

from __future__ import annotations

import argparse

__all__ = ["man_command", "man_page", "roff"]

_EXIT = (
    ("0", "done: the policy converged (or, with --noop, was checked)"),
    ("1", "a resource failed or was blocked"),
    ("2", "invalid policy or usage; nothing was changed"),
    ("130", "interrupted before the run started"),
)
_ENVIRONMENT = (
    (
        "NOTIFY_SOCKET",
        "set by systemd for a Type=notify service: convergent reports readiness "
        "(READY=1 once the policy first converged), its state (STATUS=) and reloads there",
    ),
    (
        "WATCHDOG_USEC",
        "set by systemd with WatchdogSec=: convergent sends WATCHDOG=1 at half "
        "that interval while its event loop is healthy",
    ),
    (
        "JOURNAL_STREAM",
        "set by systemd when output goes to the journal: each line then starts "
        "with its syslog priority (<3> failures, <4> blocked resources, <6> the rest)",
    ),
    ("XDG_STATE_HOME", "where a user's state directory goes (default ~/.local/state)"),
)


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes and hyphens escaped, no leading control."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _option(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{roff(s)}\\fR" for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.choices is not None:
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    return f"{names} \\fI{roff(value)}\\fR"


def _command(
    parser: argparse.ArgumentParser, words: tuple[str, ...], helps: dict[str, str]
) -> list[str]:
    out: list[str] = []
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if words:
        usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
        out += [f'.SS "{roff(usage)}"', roff(parser.description or helps.get(words[-1], ""))]
        for action in parser._actions:
            if action.option_strings and "--help" not in action.option_strings:
                out += [".TP", _option(action), roff(action.help or "")]
            elif not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                out += [".TP", f"\\fI{roff(str(action.metavar))}\\fR", roff(action.help or "")]
    for sub_action in subparsers:
        sub_helps = {c.dest: c.help or "" for c in sub_action._choices_actions}
        for name, sub in sub_action.choices.items():
            out += _command(sub, (*words, name), sub_helps)
    return out


def _kinds() -> list[str]:
    from convergent.cli.doc import reference_sections
    from convergent.policy.entries import ENTRY_KEYS

    sections = reference_sections()
    out = [
        ".SH POLICY",
        "A policy is a YAML file with one top\\-level key, \\fBresources:\\fR, a list of "
        "entries. The first key of an entry is its kind, its value the resource's name "
        "(\\fIkind\\fR[\\fIname\\fR]). Every entry also takes:",
    ]
    for key in ENTRY_KEYS:
        out += [".TP", f"\\fB{roff(key.name)}\\fR", roff(f"{key.meaning} ({key.value})")]
    for name, section in sections.items():
        if name == "meta":
            out += [".SS meta", "Meta parameters, in a \\fBmeta:\\fR mapping of any entry."]
        else:
            out += [f".SS {roff(name)}", roff(section.summary)]
        for row in section.rows:
            default = row.default
            if default not in ("required", "not set"):
                default = f"default {default}"
            out += [
                ".TP",
                f"\\fB{roff(row.name)}\\fR ({roff(row.type)}; {roff(default)})",
                roff(row.description),
            ]
    return out


def man_page() -> str:
    """The whole page, in roff (man macros)."""
    from convergent import __version__
    from convergent.cli.main import build_parser

    parser = build_parser()
    out = [
        f'.TH CONVERGENT 1 "" "convergent {__version__}" "User Commands"',
        ".SH NAME",
        "convergent \\- keep a host in the state a policy describes",
        ".SH SYNOPSIS",
        ".B convergent",
        "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIFILE\\fR]",
        ".br",
        ".B convergent run",
        "\\fIPOLICY\\fR [\\fB\\-\\-noop\\fR] [\\fB\\-\\-converged\\-timeout\\fR \\fIN\\fR]",
        ".SH DESCRIPTION",
        roff(parser.description or ""),
        "Each command's options are below; \\fBconvergent doc\\fR \\fIKIND\\fR shows a kind, "
        "\\fBconvergent schema\\fR prints the JSON Schema editors validate policies with.",
        ".SH COMMANDS",
        *_command(parser, (), {}),
        *_kinds(),
        ".SH EXIT STATUS",
    ]
    for code, text in _EXIT:
        out += [".TP", f"\\fB{code}\\fR", roff(text)]
    out.append(".SH ENVIRONMENT")
    for name, text in _ENVIRONMENT:
        out += [".TP", f"\\fB{name}\\fR", roff(text)]
    out += [
        ".SH FILES",
        ".TP",
        "\\fI/var/lib/convergent\\fR",
        "the state directory of root's agent (secrets, pending refreshes, key/values)",
        ".TP",
        "\\fI/etc/systemd/system/convergent.service\\fR",
        "the unit \\fBconvergent service install\\fR writes",
        ".SH SEE ALSO",
        "\\fBsystemd.service\\fR(5), \\fBsd_notify\\fR(3), \\fBjournalctl\\fR(1)",
    ]
    return "\n".join(out) + "\n"


def man_command(args: argparse.Namespace) -> int:
    """Print the page, or write it to ``--output``."""
    text = man_page()
    from convergent.cli.files import emit

    return emit(text, args.output)
