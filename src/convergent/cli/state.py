"""``convergent state check | restore | reset``: the way out of a damaged state database.

- ``check``: is the database sound, and the backup? Reads only; runs beside an agent.
  Exit 0 when the database is sound (or there is none yet), 2 when it is not.
- ``restore``: put the backup (the database as it was at the agent's last start, or at
  its last clean stop) in place of a damaged one, which is moved to ``state.db.damaged``.
  A sound database is replaced only with ``--yes``.
- ``reset --yes``: start afresh with an empty database, losing the secrets, pending
  refreshes, key/values and reversal records it held (listed before). Without ``--yes``
  it says what would be lost and changes nothing.

``restore`` and ``reset`` are refused while an agent runs or a reader reads the directory.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["state_command"]


def state_command(args: argparse.Namespace) -> int:
    """Run ``convergent state ACTION``; 0 done (or sound), 2 refused, damaged or failed."""
    from convergent.errors import ConvergentError
    from convergent.state.statedir import default_state_dir

    path = os.path.abspath(args.state_dir or default_state_dir())
    try:
        if args.action == "check":
            return _check(path)
        if args.action == "restore":
            return _restore(path, force=args.yes)
        return _reset(path, yes=args.yes)
    except ConvergentError as exc:  # StateError: names the file and how to fix it
        from convergent.render import say

        say(f"convergent: {exc}")
        return 2


def _check(path: str) -> int:
    from convergent.state.upkeep import check_state_dir

    health = check_state_dir(path)
    for line in health.lines:
        print(line, flush=True)
    if health.ok:
        return 0
    from convergent.state.db import way_out

    print(way_out(path, check=False), file=sys.stderr, flush=True)
    return 2


def _restore(path: str, *, force: bool) -> int:
    from convergent.state.upkeep import restore_state_dir

    print(restore_state_dir(path, force=force), flush=True)
    return 0


def _reset(path: str, *, yes: bool) -> int:
    from convergent.state.upkeep import held, reset_state_dir

    if not yes:
        print(
            f"convergent: state reset would start {path} afresh, losing {_lost(held(path))}; "
            "nothing was changed: run it again with --yes to do it",
            file=sys.stderr,
            flush=True,
        )
        return 2
    lost = reset_state_dir(path)
    print(f"{path}: state started afresh; lost {_lost(lost)}", flush=True)
    return 0


def _lost(counts: dict[str, int] | None) -> str:
    if counts is None:
        return (
            "whatever its database held (it cannot be read): generated passwords, pending "
            "refreshes, key/values, reversal records"
        )
    from convergent.state.upkeep import amount

    held = [amount(n, what) for what, n in counts.items() if n]
    return ", ".join(held) if held else "nothing (the database is empty)"
