"""``convergent facts [--json]``: this host's facts and hard classes (what ``{{ facts.* }}``
and ``if:`` see), like ``facter`` or ``cf-promises --show-classes``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

__all__ = ["facts_command"]


def _lines(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        out: list[str] = []
        for key, inner in value.items():
            out.extend(_lines(f"{prefix}.{key}" if prefix else str(key), inner))
        return out or [f"{prefix} = {{}}"]
    if isinstance(value, list):
        return [f"{prefix} = {', '.join(str(v) for v in value)}"]
    return [f"{prefix} = {value}"]


def facts_command(args: argparse.Namespace) -> int:
    """Print every fact and the hard classes; 0."""
    from convergent.host.facts import FACT_NAMES, Facts, hard_classes
    from convergent.render import say

    facts = Facts()
    found = {name: facts[name] for name in FACT_NAMES}
    classes = sorted(hard_classes(facts))
    if args.json:
        print(json.dumps({"facts": found, "classes": classes}, indent=2, sort_keys=False))
        return 0
    for line in _lines("", found):
        say(line, sys.stdout)
    say(f"classes = {' '.join(classes)}", sys.stdout)
    return 0
