"""Entry point of the ``convergent`` command: argument parsing and dispatch.

Only ``convergent.__version__`` is imported here; each command's module (and with it
the engine, the policy loader, the resources) is imported when that command runs. A
plain ``run FILE [options]`` command line is read without argparse (:func:`plain_run`),
which saves importing it and building the parser (~10 ms of start-up), and so is a lone
``--version``; every other command line, help and usage errors included, goes through
:func:`build_parser`.
"""

from __future__ import annotations

import sys

from convergent import __version__

TYPE_CHECKING = False  # as in convergent/__init__.py: typing is not imported for it
if TYPE_CHECKING:
    import argparse
    from argparse import Namespace
    from collections.abc import Callable
    from typing import Any
else:
    from types import SimpleNamespace as Namespace  # what plain_run builds

__all__ = ["RUN_LISTS", "RUN_OPTIONS", "build_parser", "entry", "main", "plain_run"]


def _bad_value(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad_value(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also rejects nan
        raise _bad_value(
            f"{text!r}: give 0 or more seconds, or leave the option out to run until stopped"
        )
    return value


def _runtime(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad_value(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):  # also rejects nan
        raise _bad_value(
            f"{text!r}: give a finite number of seconds over 0, or leave the option out"
        )
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad_value(f"{text!r} is not a whole number") from None
    if value < 1:
        raise _bad_value(f"{text!r}: give 1 or more (1: one at a time)")
    return value


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise _bad_value(f"{text!r}: give text (lines for people) or json (JSON lines)")
    return text


def _duration(text: str) -> float:
    from convergent.cli.report import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _bad_value(str(exc)) from None


def _address(text: str) -> tuple[str, int]:
    from convergent.web.metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise _bad_value(str(exc)) from None


def _keep(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad_value(f"{text!r} is not a whole number") from None
    if value < 0:
        raise _bad_value(f"{text!r}: give 0 or more (0: keep no history)")
    return value


def _urls(text: str) -> tuple[str, ...]:
    from convergent.cli.cluster import parse_urls

    return parse_urls(text)


def _initial_cluster(text: str) -> dict[str, tuple[str, ...]]:
    from convergent.cli.cluster import parse_initial_cluster

    return parse_initial_cluster(text)


#: The options of ``run``: option -> (attribute, type; None for a flag), as build_parser
#: declares them (a test checks that the two agree).
RUN_OPTIONS: dict[str, tuple[str, Callable[[str], Any] | None]] = {
    "--noop": ("noop", None),
    "--diff": ("diff", None),
    "--converged-timeout": ("converged_timeout", _seconds),
    "--max-runtime": ("max_runtime", _runtime),
    "--sema": ("sema", _count),
    "--state-dir": ("state_dir", str),
    "--log-format": ("log_format", _log_format),
    "--hostname": ("hostname", str),
    "--cluster": ("cluster", None),
    "--initial-cluster": ("initial_cluster", _initial_cluster),
    "--client-urls": ("client_urls", _urls),
    "--peer-urls": ("peer_urls", _urls),
    "--seeds": ("seeds", _urls),
    "--etcd-endpoints": ("etcd_endpoints", _urls),
    "--insecure": ("insecure", None),
    "--join-token": ("join_token", str),
    "--remote": ("remote", str),
    "--cconns": ("cconns", _count),
    "--no-caching": ("no_caching", None),
    "--identity": ("identity", str),
    "--accept-new-host-keys": ("accept_new_host_keys", None),
    "--remote-depth": ("remote_depth", _count),
    "--detach": ("detach", None),
    "--relay": ("relay", None),
    "--events-keep": ("events_keep", _keep),
    "--events-age": ("events_age", _duration),
    "--report-json": ("report_json", str),
    "--metrics": ("metrics", _address),
    "--quiet": ("quiet", None),
    "--http": ("http", str),
    "--http-token": ("http_token", str),
    "--set": ("set", str),
    "--vars-file": ("vars_file", str),
    "--set-secret": ("set_secret", str),
    "--class": ("classes", str),
}
#: The options of ``run`` that may be given more than once (each value is kept, in order).
RUN_LISTS = frozenset(("set", "vars_file", "set_secret", "classes"))
#: Those of them that argparse leaves None when absent (``action="append"``, no default).
RUN_APPENDS = frozenset(("remote",))


def plain_run(argv: list[str]) -> argparse.Namespace | None:
    """What argparse makes of a plain ``run FILE [options]``, or None for anything else.

    Plain: ``run``, then the file (and more files right after it: a remote run's mgmt
    graphs) and exact options of :data:`RUN_OPTIONS` (``--opt V`` or ``--opt=V``), each
    at most once (those of :data:`RUN_LISTS` and :data:`RUN_APPENDS`, such as
    ``--remote``, any number of times), no value or file starting with ``-``, every value
    accepted by its type. Anything else (help, an abbreviation, ``--``, a repeated
    option, a bad value, another command) returns None: argparse reads it, or explains
    what is wrong with it.
    """
    if not argv or argv[0] != "run":
        return None
    found: dict[str, Any] = {"file": None}
    more: list[str] = []  # the files right after the first (argparse's more_files)
    i = 1
    files = False  # the argument before was a file
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            if found["file"] is None:
                found["file"] = arg
            elif files:
                more.append(arg)
            else:
                return None
            files = True
            continue
        files = False
        name, eq, value = arg.partition("=")
        option = RUN_OPTIONS.get(name)
        listed = option is not None and (option[0] in RUN_LISTS or option[0] in RUN_APPENDS)
        if option is None or (option[0] in found and not listed):
            return None
        dest, convert = option
        if convert is None:
            if eq:
                return None
            found[dest] = True
            continue
        if not eq:
            if i == len(argv):
                return None
            value = argv[i]
            i += 1
        if value.startswith("-"):
            return None
        try:
            converted = convert(value)
        except Exception:  # argparse reports it
            return None
        if dest in RUN_LISTS or dest in RUN_APPENDS:
            found.setdefault(dest, []).append(converted)
        else:
            found[dest] = converted
    if found["file"] is None:
        return None
    args = Namespace(command="run")
    for dest, convert in RUN_OPTIONS.values():
        empty: list[str] | bool | None = (
            [] if dest in RUN_LISTS else False if convert is None else None
        )
        setattr(args, dest, found.get(dest, empty))
    args.file = found["file"]
    args.more_files = more  # more graphs, each for the host its remote: names (cli/remote.py)
    return args


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line."""
    import argparse

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
        "--diff",
        action="store_true",
        help="show the content diff of each change made (secrets hidden); --noop always does",
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
        "--max-runtime",
        metavar="N",
        type=_runtime,
        default=None,
        help="stop after N seconds, converged or not, as SIGTERM stops it (exit code 1 "
        "if it has not converged by then); without it, no limit",
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
    run.add_argument(
        "--log-format",
        metavar="FORMAT",
        type=_log_format,
        choices=("text", "json"),
        default=None,
        help="text (default: lines for people) or json (one JSON object per line, "
        "for log shippers)",
    )
    run.add_argument(
        "--events-keep",
        metavar="N",
        type=_keep,
        default=None,
        help="keep at most N events in the history of the state directory "
        "(default: 100000; 0: record none)",
    )
    run.add_argument(
        "--events-age",
        metavar="AGE",
        type=_duration,
        default=None,
        help="drop events older than AGE from the history (e.g. 12h, 30d; default: 7d)",
    )
    run.add_argument(
        "--report-json",
        metavar="FILE",
        default=None,
        help="at the end, write the run report as JSON to FILE (docs/report-schema.md; "
        "-: print it)",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print only failures, what --noop would change and the summary: no line per "
        "change, no progress",
    )
    run.add_argument(
        "--metrics",
        metavar="ADDR:PORT",
        type=_address,
        default=None,
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (ADDR defaults to "
        "127.0.0.1; off by default)",
    )
    run.add_argument(
        "--http",
        metavar="ADDR:PORT",
        default=None,
        help="serve a live web view of the graph at ADDR:PORT (read-only; 127.0.0.1:0 picks "
        "a free port, said on stderr); an address other than loopback needs --http-token",
    )
    run.add_argument(
        "--http-token",
        metavar="FILE",
        default=None,
        help="a file (mode 600) holding the token the web view asks for "
        "(Authorization: Bearer TOKEN, or a cookie the page sets)",
    )
    from convergent.cli.cluster import add_cluster_parser, add_run_options
    from convergent.cli.inputs import add_input_options

    add_run_options(run, urls=_urls, initial_cluster=_initial_cluster)
    from convergent.cli.remote import add_remote_options

    add_remote_options(run, count=_count)
    add_input_options(run)

    check = commands.add_parser(
        "check",
        help="validate a policy without touching the host",
        description="Load and validate the policy in FILE; report every problem. "
        "Nothing on the host is read or changed.",
    )
    check.add_argument("file", metavar="FILE", help="the policy (YAML)")
    add_input_options(check)
    check.add_argument(
        "--strict", action="store_true", help="also list the class names nothing defines"
    )

    graph = commands.add_parser(
        "graph",
        help="draw the dependency graph of a policy",
        description="Write the dependency graph of the policy in FILE as Graphviz DOT or SVG.",
    )
    graph.add_argument("file", metavar="FILE", help="the policy (YAML)")
    add_input_options(graph)
    graph.add_argument(
        "--format",
        choices=("dot", "svg"),
        default="dot",
        help="dot (default) or svg (needs graphviz's 'dot' program)",
    )
    graph.add_argument(
        "-o", "--output", metavar="OUT", default=None, help="write to OUT instead of stdout"
    )
    from convergent.cli.parsers import add_report_parser, add_state_parser, add_tool_parsers

    add_state_parser(commands)
    add_tool_parsers(commands)
    add_cluster_parser(commands, urls=_urls)
    add_report_parser(commands)
    from convergent.cli.invoke import add_parsers

    add_parsers(commands)
    return parser


_TOOLS = {
    "schema": ("convergent.cli.schema", "schema_command"),
    "doc": ("convergent.cli.doc", "doc_command"),
    "completion": ("convergent.cli.completion", "completion_command"),
    "man": ("convergent.cli.man", "man_command"),
    "service": ("convergent.cli.service", "service_command"),
    "cluster": ("convergent.cli.cluster", "cluster_command"),
    "report": ("convergent.cli.report", "report_command"),
    "status": ("convergent.cli.control", "status_command"),
    "facts": ("convergent.cli.facts", "facts_command"),
    "destroy": ("convergent.cli.destroy", "destroy_command"),
    "invoke": ("convergent.cli.invoke", "invoke_command"),
    "history": ("convergent.cli.history", "history_command"),
}


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
    if args.command == "state":
        from convergent.cli.state import state_command

        return state_command(args)
    if args.command in _TOOLS:
        import importlib

        module, function = _TOOLS[args.command]
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), function
        )
        return command(args)
    from convergent.cli.graph import graph_command

    return graph_command(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    0: done (converged); 1: a resource failed or was blocked; 2: invalid policy or usage;
    130: interrupted before the run started.

    The cyclic garbage collector is off during start-up (imports, policy loading), which
    makes many long-lived objects and almost no garbage: a W2 run spent ~30 ms in ~120
    collections, ~9 ms this way. ``run`` turns it back on (after ``gc.freeze()``) at the
    engine's first convergence; the collector's state is restored on return.
    """
    return _collecting_after(argv, hold=False)


def _collecting_after(argv: list[str] | None, *, hold: bool) -> int:
    """:func:`_main` with the collector off, then as it was. ``hold``: import asyncio and
    msgspec with what a run does not use held back (the ``convergent`` command only: a
    program that embeds convergent imports them as it wants)."""
    import gc

    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv, hold=hold)
    finally:
        if collecting:
            gc.enable()
        else:
            gc.disable()


def _main(argv: list[str] | None, *, hold: bool) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words == ["--version"]:  # what argparse would print, without building the parser
        print(f"convergent {__version__}", flush=True)
        return 0
    args = plain_run(words)
    if args is None:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits after --version, --help and usage errors
            return _exit_code(exc.code)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
    if hold:
        from convergent.cli.lazystd import import_runtime

        import_runtime()  # ssl, subprocess, logging... loaded when used (cli/lazystd.py)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`convergent graph FILE | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1


def entry() -> None:
    """The ``convergent`` command (and ``python -m convergent``): :func:`main`, then exit.

    The process ends without tearing the interpreter down: once the output is flushed,
    the non-daemon threads joined and the ``atexit`` handlers run (what an orderly exit
    guarantees), freeing every module and object one by one is work nobody sees, ~2.5 ms
    of a 10-file run here. Call :func:`main` to run the command line in-process. Nor is
    the garbage collected after :func:`main` (it found the collector off, so leaves it
    off): the engine's cyclic objects would be, ~8 K instructions a resource.

    As process 1 of its PID namespace (a container's entry point), it forks first and
    runs the command in the child while process 1 reaps orphans and passes signals on
    (:mod:`convergent.cli.pid1`).

    The modules it imports come from the start-up cache when they are in it
    (:mod:`convergent.cli.codecache`), which is written again at the end when they were
    not.
    """
    import gc
    import os

    if os.getpid() == 1:  # a container's entry point: an init stays process 1 (cli/pid1.py)
        from convergent.cli.pid1 import become_init

        become_init()

    from convergent.cli.codecache import install

    gc.disable()  # main() leaves it off: the run's garbage is never collected, only dropped
    cache = install(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = _collecting_after(None, hold=True)
    if cache is not None:
        import contextlib

        with contextlib.suppress(KeyboardInterrupt):  # the command is done: its code stands
            cache.save()
    _exit(code)


def _exit(code: int) -> None:
    """What an orderly exit does, in its order, then ``os._exit``."""
    import atexit
    import os

    threading = sys.modules.get("threading")  # not imported: no thread was started
    if threading is not None:
        main_thread = threading.main_thread()
        for thread in threading.enumerate():
            if thread is not main_thread and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: as Python does, say so in the code
            code = code or 120
    os._exit(code)
