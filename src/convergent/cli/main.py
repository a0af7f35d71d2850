"""Entry point of the ``convergent`` command: argument parsing and dispatch.

Only argparse and ``convergent.__version__`` are imported here; each command's module
(and with it the engine, the policy loader, the resources) is imported when that
command runs.
"""

from __future__ import annotations

import argparse
import sys

from convergent import __version__

__all__ = ["build_parser", "main"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(
            f"{text!r}: give 0 or more seconds, or leave the option out to run until stopped"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more (1: one at a time)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    parser = argparse.ArgumentParser(
        prog="convergent",
        description="Keep this host in the state a policy describes; repair drift as it happens.",
    )
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="converge this host to a policy and keep it there",
        description="Converge this host to the policy in FILE, then watch and repair drift "
        "until stopped (Ctrl-C, SIGTERM) or until --converged-timeout.",
    )
    run.add_argument("file", metavar="FILE", help="the policy (YAML)")
    run.add_argument(
        "--noop", action="store_true", help="only report what would change; change nothing"
    )
    run.add_argument(
        "--converged-timeout",
        metavar="N",
        type=_seconds,
        default=None,
        help="exit N seconds after everything converged (0: as soon as it converges); "
        "without it, keep running and repairing drift until stopped",
    )
    run.add_argument(
        "--sema",
        metavar="N",
        type=_count,
        default=None,
        help="check/apply at most N resources at the same time (1: one at a time); "
        "default: as many as the graph allows",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="where convergent keeps its own state (default: /var/lib/convergent for root, "
        "else $XDG_STATE_HOME/convergent or ~/.local/state/convergent)",
    )

    check = commands.add_parser(
        "check",
        help="validate a policy without touching the host",
        description="Load and validate the policy in FILE; report every problem. "
        "Nothing on the host is read or changed.",
    )
    check.add_argument("file", metavar="FILE", help="the policy (YAML)")

    graph = commands.add_parser(
        "graph",
        help="draw the dependency graph of a policy",
        description="Write the dependency graph of the policy in FILE as Graphviz DOT or SVG.",
    )
    graph.add_argument("file", metavar="FILE", help="the policy (YAML)")
    graph.add_argument(
        "--format",
        choices=("dot", "svg"),
        default="dot",
        help="dot (default) or svg (needs graphviz's 'dot' program)",
    )
    graph.add_argument(
        "-o", "--output", metavar="OUT", default=None, help="write to OUT instead of stdout"
    )
    return parser


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from convergent.cli.run import run_command

        return run_command(args)
    if args.command == "check":
        from convergent.cli.check import check_command

        return check_command(args)
    from convergent.cli.graph import graph_command

    return graph_command(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    0: done (converged); 1: a resource failed or was blocked; 2: invalid policy or usage;
    130: interrupted before the run started.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits after --version, --help and usage errors
        return _exit_code(exc.code)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`convergent graph FILE | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
