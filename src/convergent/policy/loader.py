"""YAML policy loader (placeholder signature; filled in by the policy work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convergent.graph.core import Graph
from convergent.resources.base import Resource

__all__ = ["load_policy", "load_policy_text"]


def load_policy(path: str | Path) -> Graph[Resource[Any]]:
    """Load and validate a policy file; raise PolicyError listing every problem."""
    p = Path(path)
    return load_policy_text(p.read_text(encoding="utf-8"), str(p))


def load_policy_text(text: str, filename: str = "<policy>") -> Graph[Resource[Any]]:
    raise NotImplementedError
