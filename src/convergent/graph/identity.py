"""Resource identity: ``kind[name]``, the one spelling used in logs, errors and policies."""

from __future__ import annotations

import re

__all__ = ["format_id", "parse_ref"]

_REF = re.compile(r"^([a-z][a-z0-9_]*)\[(.+)\]$", re.DOTALL)


def format_id(kind: str, name: str) -> str:
    """``format_id("file", "/a")`` -> ``"file[/a]"``."""
    return f"{kind}[{name}]"


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``kind[name]`` into ``(kind, name)``.

    Raises ValueError with the expected spelling when ``ref`` is not a reference.
    """
    match = _REF.match(ref.strip())
    if match is None:
        raise ValueError(
            f"{ref!r} is not a resource reference; write it as kind[name], e.g. file[/etc/motd]"
        )
    return match.group(1), match.group(2)
