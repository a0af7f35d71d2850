"""``convergent history [--json]``: the invocations recorded on this host, oldest first."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from convergent.errors import ConvergentError
from convergent.render import say

if TYPE_CHECKING:
    import argparse

    from convergent.state.invocations import Record

__all__ = ["history_command", "line"]


def line(record: Record) -> str:
    """One record as a line for people."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
    switches = " ".join(f"{k}={v}" for k, v in record.switches.items())
    who = record.user + (f" (sudo: {record.sudo_user})" if record.sudo_user else "")
    outcome = record.outcome + (f": {record.reason}" if record.reason else "")
    counts = f" (would change {record.would_change}, may change {record.may_change}"
    counts += ")" if record.noop else f", changed {record.changed})"
    if record.outcome == "refused":
        counts = ""
    return (
        f"{when} {record.host} {who}: {record.invocation}{' --noop' if record.noop else ''} "
        f"[{','.join(record.methods)}]{' ' + switches if switches else ''} -> {outcome}{counts}"
    )


def history_command(args: argparse.Namespace) -> int:
    """Print the records (``--json``: one JSON object each); 2 when the state cannot be read."""
    import msgspec

    from convergent.state.invocations import history
    from convergent.state.statedir import default_state_dir, open_state_dir

    state_dir = os.path.abspath(args.state_dir or default_state_dir())
    try:
        opened = open_state_dir(state_dir, mode="shared")
    except ConvergentError as exc:
        say(f"convergent: {exc}")
        return 2
    try:
        records = history(opened.db) if opened.db is not None else []
    except ConvergentError as exc:
        say(f"convergent: {exc}")
        return 2
    finally:
        opened.close()
    for record in records:
        if args.json:
            sys.stdout.write(msgspec.json.encode(record).decode() + "\n")
        else:
            say(line(record), sys.stdout)
    if not records and not args.json:
        say("no invocation recorded in " + state_dir, sys.stdout)
    return 0
