"""The command line of ``destroy``, ``invoke`` and ``history``; ``convergent invoke``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parsers"]

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
