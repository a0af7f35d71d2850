"""The parsers of the commands that do not run a policy (``state``, the tools, ``report``
and ``status``), declared on ``build_parser()``'s sub-parsers (standard library only)."""

from __future__ import annotations

import argparse

__all__ = ["add_report_parser", "add_state_parser", "add_tool_parsers"]


def add_tool_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the commands that fit convergent into editors, shells and systemd."""
    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the policy format (for editors)",
        description="Print the policy format as a JSON Schema (draft 2020-12): every kind "
        "installed here, its parameters, types, defaults and descriptions.",
    )
    schema.add_argument(
        "-o", "--output", metavar="OUT", default=None, help="write to OUT instead of stdout"
    )
    doc = commands.add_parser(
        "doc",
        help="show the reference of a kind (without KIND: list the kinds)",
        description="Print the reference of KIND: what it does, its parameters, their "
        "types, defaults and meaning. Without KIND, list every kind installed here.",
    )
    doc.add_argument("kind", metavar="KIND", nargs="?", default=None, help="a kind, e.g. file")
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print the completion script of SHELL, e.g. "
        "'source <(convergent completion bash)' in ~/.bashrc.",
    )
    completion.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "fish"))
    man = commands.add_parser(
        "man",
        help="print the convergent(1) man page (roff)",
        description="Print the convergent(1) manual page as roff, "
        "e.g. 'convergent man | man -l -'.",
    )
    man.add_argument(
        "-o", "--output", metavar="OUT", default=None, help="write to OUT instead of stdout"
    )
    service = commands.add_parser(
        "service",
        help="run convergent as a systemd service",
        description="Install a systemd unit that keeps this host converged to a policy.",
    )
    actions = service.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install",
        help="write the systemd unit convergent.service",
        description="Write a systemd unit (Type=notify) that runs 'convergent run POLICY' "
        "and reloads it on 'systemctl reload'; then run 'systemctl daemon-reload' and "
        "'systemctl enable --now convergent'.",
    )
    install.add_argument("--policy", metavar="FILE", required=True, help="the policy (YAML)")
    install.add_argument(
        "--state-dir", metavar="DIR", default=None, help="the state directory of the service"
    )
    install.add_argument(
        "--unit-dir",
        metavar="DIR",
        default="/etc/systemd/system",
        help="where the unit goes (default: /etc/systemd/system)",
    )
    install.add_argument(
        "--name", metavar="NAME", default="convergent", help="unit name (default: convergent)"
    )
    install.add_argument(
        "--print", action="store_true", help="print the unit instead of writing it"
    )
    facts = commands.add_parser(
        "facts",
        help="print this host's facts and hard classes",
        description="Print the facts a policy sees as {{ facts.NAME }} and the hard "
        "classes its if: expressions see (linux, debian_12, x86_64, the host name...).",
    )
    facts.add_argument("--json", action="store_true", help="print them as one JSON object")


def add_report_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``report``: compliance, hot spots and the slowest, from the event history."""
    report = commands.add_parser(
        "report",
        help="compliance, drift hot spots and the slowest resources, from the event history",
        description="Summarize the event history of the state directory: per-resource "
        "counts, compliance (kept + repaired against not kept, as a percentage), the "
        "resources repaired most often and the slowest ones.",
    )
    report.add_argument(
        "--since",
        metavar="AGE",
        default=None,
        help="only the events of the last AGE (e.g. 30m, 1h, 7d; default: all kept)",
    )
    report.add_argument(
        "--json", action="store_true", help="print the report as JSON (docs/report-schema.md)"
    )
    status = commands.add_parser(
        "status",
        help="ask the running agent what it does, waits for, and what failed",
        description="Ask the agent running on the state directory (through its control "
        "socket) what it is doing now, what it waits for and what failed and why. "
        "Exit code: 0 converged, 1 not (yet), 2 cannot ask, 3 no agent.",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    for command in (report, status):
        command.add_argument(
            "--state-dir",
            metavar="DIR",
            default=None,
            help="the state directory (default: /var/lib/convergent for root, "
            "else $XDG_STATE_HOME/convergent or ~/.local/state/convergent)",
        )


def add_state_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``state`` and its sub-commands on the command line's sub-parsers."""
    state = commands.add_parser(
        "state",
        help="check, restore or reset convergent's own state database",
        description="Check convergent's state database (pending refreshes, secrets, "
        "key/values), bring back its backup, or start afresh.",
    )
    actions = state.add_subparsers(dest="action", metavar="ACTION", required=True)
    specs = (
        ("check", "report whether the state database and its backup are sound", None),
        (
            "restore",
            "replace a damaged state database by its backup (taken at the agent's last start)",
            "also replace a database that is not damaged",
        ),
        (
            "reset",
            "start afresh with an empty state database (its secrets are lost)",
            "really do it (without: say what would be lost, change nothing)",
        ),
    )
    for name, text, yes in specs:
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument(
            "--state-dir",
            metavar="DIR",
            default=None,
            help="the state directory (default: /var/lib/convergent for root, "
            "else $XDG_STATE_HOME/convergent or ~/.local/state/convergent)",
        )
        if yes is not None:
            action.add_argument("--yes", action="store_true", help=yes)


#: The tool commands: command -> (module, function), imported when the command runs.
