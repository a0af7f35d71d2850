"""``convergent invoke POLICY NAME [-l M1,M2] [--set K=V] [--noop]``: run a named
invocation, never past its guard rails; and the parsers of ``destroy`` and ``history``.

The steps, each refusing with a message that says which rail and how to pass it, and
each recorded (:mod:`convergent.state.invocations`):

1. The invocation, its methods (``-l``: some of them) and its switches (``--set``) are
   checked against the policy: unknown ones are refused with the valid list. Switches
   are the policy's template variables (a ``secret`` switch is a secret variable).
2. ``allowed_classes``/``forbidden_classes``: against this host's hard classes (from
   its facts). ``--class`` cannot make a host allowed; it can only forbid.
3. ``require_noop_first``: a real run needs a ``--noop`` of the same run (same policy
   file, methods, switches and resources: :func:`~convergent.engine.invocation.fingerprint`)
   that ended well on this host within the duration, and each noop stands for one real
   run. There is no option to skip it.
4. A dry run (noop) of the part: what would change and what may (after it). A ``--noop``
   invocation is only this, shown and recorded. ``max_changes``: a real run is refused
   before anything is applied when the two together are more.
5. ``confirm``: the invocation's name typed on the terminal; refused when stdin is not
   one (a pipe or a script cannot confirm; a policy that must run unattended does not
   set ``confirm``). A ``--noop`` never asks.
6. The real run, as ``run --converged-timeout 0`` of the part, in dependency order.

The state directory is opened as an agent opens it (exclusively): invoke refuses while
an agent runs on it, so the two never fight over the same resources.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from convergent.engine.report import Report, RunResult
    from convergent.graph.core import Graph
    from convergent.policy.invocations import Invocation
    from convergent.resources.base import Resource
    from convergent.state.db import StateDB
    from convergent.state.invocations import Outcome, Record

__all__ = ["add_parsers", "host_classes", "invoke_command"]

NOTHING_CHANGED = "nothing was changed"
REFUSED = 3  # the exit code of a run a guard rail refused

_STATE_DIR_HELP = (
    "where convergent keeps its own state (default: /var/lib/convergent for root, "
    "else $XDG_STATE_HOME/convergent or ~/.local/state/convergent)"
)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``destroy``, ``invoke`` and ``history`` on the command line's sub-parsers."""
    destroy = commands.add_parser(
        "destroy",
        help="drive what a policy describes to its absent state, last first",
        description="Remove what the policy in FILE describes (files removed, processes "
        "stopped; packages and accounts only with destroy: remove), in reverse dependency "
        "order, in parallel where that order allows. A policy that does not load is "
        "refused; kinds with no absent state are left alone and named.",
    )
    destroy.add_argument("file", metavar="FILE", help="the policy (YAML)")
    destroy.add_argument(
        "--only",
        metavar="BUNDLE,...",
        default=None,
        help="only these bundle uses: a bundle (webserver: every use) or one use "
        "(webserver[main]), comma-separated",
    )
    destroy.add_argument(
        "--noop", action="store_true", help="only report what would be removed; change nothing"
    )
    destroy.add_argument(
        "--diff", action="store_true", help="show the content diff of each change made"
    )
    destroy.add_argument("--state-dir", metavar="DIR", default=None, help=_STATE_DIR_HELP)
    from convergent.cli.inputs import add_input_options

    add_input_options(destroy)  # the policy loads as the run that made it: --set, --class

    invoke = commands.add_parser(
        "invoke",
        help="run a named invocation of a policy, within its guard rails",
        description="Run the bundles (methods) of the invocation NAME of the policy in "
        "FILE, and what they require, in dependency order, with its switches, never past "
        "the guard rails the policy sets (require_noop_first, max_changes, "
        "allowed_classes, forbidden_classes, confirm). Each invocation is recorded.",
    )
    invoke.add_argument("file", metavar="FILE", help="the policy (YAML)")
    invoke.add_argument("name", metavar="NAME", help="the invocation, as the policy names it")
    invoke.add_argument(
        "-l",
        "--methods",
        metavar="M1,M2",
        default=None,
        help="run only these of its methods (bundles), comma-separated",
    )
    invoke.add_argument(
        "--set",
        metavar="SWITCH=VALUE",
        action="append",
        default=[],
        help="set a switch of the invocation (repeat for more)",
    )
    invoke.add_argument(
        "--class",
        metavar="NAME",
        dest="classes",
        action="append",
        default=[],
        help="add a class to this host (for the policy's if:; never counts as allowed)",
    )
    invoke.add_argument(
        "--noop", action="store_true", help="only report what would change; change nothing"
    )
    invoke.add_argument("--state-dir", metavar="DIR", default=None, help=_STATE_DIR_HELP)

    history = commands.add_parser(
        "history",
        help="list the invocations run on this host",
        description="List every convergent invoke recorded in the state database: when, "
        "who, which invocation and switches (secrets hidden), and how it ended.",
    )
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.add_argument("--state-dir", metavar="DIR", default=None, help=_STATE_DIR_HELP)


def host_classes(extra: tuple[str, ...] = ()) -> tuple[frozenset[str], frozenset[str]]:
    """``(allowing, forbidding)``: this host's hard classes (from its facts), and those
    plus ``extra`` (``--class``), which can forbid but never allow."""
    from convergent.host.facts import Facts, hard_classes

    hard = hard_classes(Facts())
    return hard, hard | frozenset(extra)


def say(message: str, file: Any = None) -> None:
    """:func:`convergent.render.say`, imported when first needed (``build_parser`` imports
    this module for every command line)."""
    from convergent.render import say as render_say

    render_say(message, file)


class _Refused(Exception):
    """A guard rail (or the command line) said no; the message says why and how."""


def invoke_command(args: argparse.Namespace) -> int:
    """Run the invocation ``args.name`` of ``args.file``; 0 done, 1 failed, 2 bad input,
    3 refused by a guard rail."""
    from convergent.errors import ConvergentError

    try:
        text, invocations, bundles = _read(args.file)
    except _Refused as exc:
        for line in str(exc).splitlines():
            say(line)  # file:line:col: ... at the start of each line
        return _refuse("", code=2, quiet=True)
    invocation = invocations.get(args.name)
    if invocation is None:
        valid = ", ".join(sorted(invocations)) or "none: the policy has no invocations:"
        return _refuse(
            f"{args.file}: no invocation named {args.name!r}; its invocations: {valid}", code=2
        )
    from convergent.policy.invocations import SwitchError, resolve_switches

    methods = list(invocation.methods)
    if args.methods is not None:
        asked = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in asked if m not in invocation.methods]
        if unknown or not asked:
            return _refuse(
                f"-l {args.methods}: invocation {invocation.name} may run "
                f"{', '.join(invocation.methods)}",
                code=2,
            )
        methods = asked
    try:
        switches = resolve_switches(invocation, args.set)
    except SwitchError as exc:
        return _refuse(str(exc), code=2)
    graph = _load(args.file, invocation, switches, tuple(args.classes))
    if graph is None:
        return _refuse(f"{args.file} does not load with these switches", code=2, quiet=True)
    known = bundles | {use.partition("[")[0] for use in graph.clusters}
    missing = [m for m in methods if m not in known]
    if missing:
        return _refuse(
            f"invocation {invocation.name}: the policy has no bundle {', '.join(missing)}; "
            f"its bundles: {', '.join(sorted(known)) or 'none'}",
            code=2,
        )
    from convergent.engine.invocation import fingerprint, part, uses_of

    runs = part(graph, uses_of(graph.clusters, methods))
    mark = fingerprint(text, invocation.name, methods, switches, runs)
    try:
        opened = _open(args)
    except ConvergentError as exc:
        return _refuse(str(exc), code=2)
    try:
        return _invoke(args, invocation, methods, switches, runs, mark, opened.db)
    finally:
        opened.close()


def _invoke(
    args: argparse.Namespace,
    invocation: Invocation,
    methods: list[str],
    switches: dict[str, Any],
    runs: Graph[Resource[Any]],
    mark: str,
    db: StateDB | None,
) -> int:
    from convergent.state.invocations import save, update

    assert db is not None  # opened exclusively: there is always one
    record = save(db, _record(args, invocation, methods, switches, mark))
    try:
        _guard_classes(invocation, tuple(args.classes))
        if not args.noop:
            _guard_noop_first(invocation, db, mark, record.id)
        would, may, failed = _dry_run(args, runs, db, shown=args.noop or invocation.guard.confirm)
        update(db, record, "running", would_change=would, may_change=may)
        if args.noop:
            if failed:  # it could not show everything that would change: it stands for nothing
                update(db, record, "failed", f"{failed} resource(s) could not be checked")
                return 1
            update(db, record, "ok")
            say(
                f"invoke {invocation.name} (noop): {would} resource(s) would change, "
                f"{may} may change after them; {NOTHING_CHANGED}",
                sys.stdout,
            )
            return 0
        limit = invocation.guard.max_changes
        if limit is not None and would + may > limit:
            raise _Refused(
                f"max_changes: the dry run predicts {would} change(s) and {may} more that "
                f"may follow, over the {limit} invocation {invocation.name} allows; "
                "run fewer methods (-l), or change the policy's guard"
            )
        if invocation.guard.confirm:
            _confirm(invocation, would, may)
    except _Refused as exc:
        update(db, record, "refused", str(exc))
        return _refuse(str(exc))
    try:
        result = _real_run(args, invocation, switches, methods, mark, db)
    except _Refused as exc:
        update(db, record, "refused", str(exc))
        return _refuse(str(exc))
    if result is None:
        update(db, record, "failed", "the run could not start")
        return 2
    unsettled = result.failed + result.blocked + result.retrying
    outcome: Outcome = "failed" if unsettled else "ok"
    update(db, record, outcome, changed=result.changed, failed=unsettled)
    return 1 if outcome == "failed" else 0


def _read(file: str) -> tuple[bytes, dict[str, Invocation], set[str]]:
    """The policy's bytes, its invocations and the bundles its own file defines."""
    from convergent.errors import PolicyError
    from convergent.policy.invocations import read_invocations
    from convergent.policy.loader import MAX_POLICY_BYTES

    try:
        with open(file, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise _Refused(f"convergent: cannot read {file}: {exc.strerror or exc}") from None
    try:
        invocations, bundles = read_invocations(data.decode("utf-8", "replace"), file)
    except PolicyError as exc:
        raise _Refused("\n".join(str(p) for p in exc.problems) or str(exc)) from None
    except Exception as exc:  # not YAML: the loader says where
        raise _Refused(f"{file}: {exc}; convergent check {file} says where") from None
    return data, invocations, bundles


def _load(
    file: str, invocation: Invocation, switches: dict[str, Any], classes: tuple[str, ...]
) -> Graph[Resource[Any]] | None:
    from convergent.cli.load import load_graph
    from convergent.policy.vars import Inputs

    plain = {k: v for k, v in switches.items() if not invocation.switches[k].secret}
    hidden = {k: v for k, v in switches.items() if invocation.switches[k].secret}
    return load_graph(file, Inputs(sets=plain, secret_sets=hidden, classes=classes))


def _open(args: argparse.Namespace) -> Any:
    from convergent.host.children import reap_orphans
    from convergent.state.statedir import default_state_dir, open_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    return open_state_dir(state_dir, mode="exclusive", after_lock=reap_orphans)


def _record(
    args: argparse.Namespace,
    invocation: Invocation,
    methods: list[str],
    switches: dict[str, Any],
    mark: str,
) -> Record:
    import pwd
    import socket

    from convergent.state.invocations import Record

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    shown = {k: "<secret>" if invocation.switches[k].secret else v for k, v in switches.items()}
    return Record(
        invocation=invocation.name,
        policy=os.path.abspath(args.file),
        host=socket.gethostname(),
        uid=uid,
        user=user,
        sudo_user=os.environ.get("SUDO_USER"),
        started=time.time(),
        methods=methods,
        switches=shown,
        fingerprint=mark,
        noop=args.noop,
    )


def _guard_classes(invocation: Invocation, extra: tuple[str, ...]) -> None:
    guard = invocation.guard
    if not (guard.allowed_classes or guard.forbidden_classes):
        return
    allowing, forbidding = host_classes(extra)
    if guard.allowed_classes and not allowing & set(guard.allowed_classes):
        raise _Refused(
            f"allowed_classes: invocation {invocation.name} runs only on a host of class "
            f"{' or '.join(guard.allowed_classes)}; this one is {', '.join(sorted(allowing))} "
            "(--class does not count here)"
        )
    hit = forbidding & set(guard.forbidden_classes)
    if hit:
        raise _Refused(
            f"forbidden_classes: invocation {invocation.name} never runs on a host of class "
            f"{', '.join(sorted(hit))}"
        )


def _guard_noop_first(invocation: Invocation, db: StateDB, mark: str, asking: int) -> None:
    within = invocation.guard.require_noop_first
    if within is None:
        return
    from convergent.state.invocations import latest_noop

    if latest_noop(db, mark, within, time.time(), asking) is None:
        raise _Refused(
            f"require_noop_first: invocation {invocation.name} runs only after a --noop of "
            f"the same run (same policy, methods and switches) on this host within "
            f"{_duration(within)}, each noop good for one run; run it with --noop first, "
            "read what it would change, then run it again without --noop"
        )


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _dry_run(
    args: argparse.Namespace, runs: Graph[Resource[Any]], db: StateDB, *, shown: bool
) -> tuple[int, int, int]:
    """Run ``runs`` under noop (reports shown when ``shown``): how many resources would
    change, may change after them, and failed (or were blocked) in the check."""
    import asyncio

    from convergent.cli.run import run_with_signals
    from convergent.engine.invocation import Prediction
    from convergent.render import TextRenderer
    from convergent.state.db import StateDB

    prediction = Prediction(runs)
    renderer = TextRenderer(watching=False)

    class _Both(TextRenderer):
        def __call__(self, report: Report) -> None:
            prediction(report)
            if shown:
                renderer(report)

        def note(self, message: str, *, error: bool = False, event: str = "message") -> None:
            if shown or error:
                renderer.note(message, error=error, event=event)

    reader = StateDB(db.path, readonly=True)  # noop reads only
    try:
        result = asyncio.run(
            run_with_signals(
                runs, noop=True, converged_timeout=0, reporter=_Both(watching=False), state=reader
            )
        )
    finally:
        reader.close()
    would, may = prediction.counts()
    return would, may, result.failed + result.blocked


def _confirm(invocation: Invocation, would: int, may: int) -> None:
    if not sys.stdin.isatty():
        raise _Refused(
            f"confirm: invocation {invocation.name} asks for its name typed on a terminal, "
            "and stdin is not one; run it from a terminal"
        )
    sys.stderr.write(
        f"invoke {invocation.name}: {would} resource(s) would change, {may} may change after "
        f"them. Type {invocation.name} to apply: "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline().strip()
    if answer != invocation.name:
        raise _Refused(f"confirm: {answer!r} is not {invocation.name!r}; {NOTHING_CHANGED}")


def _real_run(
    args: argparse.Namespace,
    invocation: Invocation,
    switches: dict[str, Any],
    methods: list[str],
    mark: str,
    db: StateDB,
) -> RunResult | None:
    """Load afresh (new resource objects: the dry run's watched and remembered) and run,
    unless the policy is no longer the one the guard rails passed (``mark``)."""
    import asyncio

    from convergent.cli.run import run_with_signals
    from convergent.engine.invocation import fingerprint, part, uses_of
    from convergent.render import TextRenderer

    before = _read(args.file)[0]
    graph = _load(args.file, invocation, switches, tuple(args.classes))
    if graph is None:
        return None
    runs = part(graph, uses_of(graph.clusters, methods))
    after = _read(args.file)[0]
    if after != before or fingerprint(after, invocation.name, methods, switches, runs) != mark:
        raise _Refused(
            f"{args.file} changed while invocation {invocation.name} ran its checks; run it again"
        )
    renderer = TextRenderer(watching=False)
    result = asyncio.run(
        run_with_signals(runs, noop=False, converged_timeout=0, reporter=renderer, state=db)
    )
    renderer.note(result.summary(), event="summary")
    return result


def _refuse(message: str, *, code: int = REFUSED, quiet: bool = False) -> int:
    if not quiet:
        say(f"convergent: {message}")
    print(NOTHING_CHANGED, file=sys.stderr, flush=True)
    return code
